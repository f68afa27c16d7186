package httpapi

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/officerkey"
)

// from sends a request into the API as if from remote (and, when xff is
// set, with X-Forwarded-For).
func (e *deviceEnv) from(remote, xff, method, path, apiKey string) int {
	e.t.Helper()
	req := httptest.NewRequest(method, path, nil)
	req.RemoteAddr = remote
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	if apiKey != "" {
		req.Header.Set("api-key", apiKey)
	}
	rec := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rec, req)
	return rec.Code
}

var badLineA = "krk_c_line-a_" + strings.Repeat("0", 64)

// TestThrottlingBySourceOnly plays an outsider who knows the public name
// of a factory client (it is in every gadget image) or an officer: their
// failures from their own address never lock out the real holder
// elsewhere. IPv6 sources count by /64.
func TestThrottlingBySourceOnly(t *testing.T) {
	e := newDeviceEnv(t, false)
	for i := 0; i < 10; i++ {
		e.from("127.0.0.2:4000", "", "POST", "/v1/request-id", badLineA)
	}
	if code := e.from("127.0.0.2:4000", "", "POST", "/v1/request-id", e.apiKeys["line-a"]); code != http.StatusTooManyRequests {
		t.Fatalf("the guessing address with the right key: %d", code)
	}
	if code := e.from("127.0.0.1:4000", "", "POST", "/v1/request-id", e.apiKeys["line-a"]); code != http.StatusOK {
		t.Fatalf("the real line elsewhere, after someone else's failures for its name: %d", code)
	}
	// Failed logins naming alice, from 192.0.2.7 (a dev appliance takes
	// plain HTTP): alice logs in from her own machine all the same.
	for i := 0; i < 10; i++ {
		ch := e.do("", "POST", "/v1/login/challenge", map[string]any{"officer": "alice"})
		sig, _ := officerkey.Sign(e.keys["bob"], officerkey.DomainLogin, []byte(ch.Body["content"].(string)))
		req := httptest.NewRequest("POST", "/v1/login", strings.NewReader(`{"id":"`+ch.Body["id"].(string)+`","signature":"`+b64(sig)+`"}`))
		req.RemoteAddr = "192.0.2.7:4000"
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		e.srv.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("mallory's login %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	e.login("alice", e.keys["alice"])
	// IPv6: one /64 is one source.
	for i := 0; i < 10; i++ {
		e.from(fmt.Sprintf("[2001:db8:1:2::%x]:4000", i+1), "", "POST", "/v1/request-id", badLineA)
	}
	if code := e.from("[2001:db8:1:2::ffff]:4000", "", "POST", "/v1/request-id", e.apiKeys["line-a"]); code != http.StatusTooManyRequests {
		t.Fatalf("another address of the same /64: %d", code)
	}
	if code := e.from("[2001:db8:1:3::1]:4000", "", "POST", "/v1/request-id", e.apiKeys["line-a"]); code != http.StatusOK {
		t.Fatalf("another /64: %d", code)
	}
}

// TestForwardedForOnlyFromTrustedProxies: X-Forwarded-For names the
// client only on a request from a configured proxy; anyone else's is
// ignored, so nobody chooses the address their failures count against.
func TestForwardedForOnlyFromTrustedProxies(t *testing.T) {
	e := newDeviceEnv(t, false, func(c *appliance.Config) { c.HTTP.TrustedProxies = []string{"10.9.0.0/24"} })
	for i := 0; i < 10; i++ {
		e.from("10.9.0.5:4000", "198.51.100.7", "POST", "/v1/request-id", badLineA)
	}
	if code := e.from("10.9.0.5:4000", "198.51.100.7", "POST", "/v1/request-id", e.apiKeys["line-a"]); code != http.StatusTooManyRequests {
		t.Fatalf("the client the proxy forwards for: %d", code)
	}
	if code := e.from("10.9.0.5:4000", "198.51.100.8", "POST", "/v1/request-id", e.apiKeys["line-a"]); code != http.StatusOK {
		t.Fatalf("another client behind the same proxy: %d", code)
	}
	// Not a proxy: its X-Forwarded-For is ignored, and its failures count
	// against itself, whatever it claims.
	for i := 0; i < 10; i++ {
		e.from("192.0.2.9:4000", fmt.Sprintf("198.51.100.%d", 10+i), "POST", "/v1/request-id", badLineA)
	}
	if code := e.from("192.0.2.9:4000", "198.51.100.99", "POST", "/v1/request-id", e.apiKeys["line-a"]); code != http.StatusTooManyRequests {
		t.Fatalf("a client forging X-Forwarded-For: %d", code)
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
