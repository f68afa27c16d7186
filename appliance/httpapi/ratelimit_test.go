package httpapi

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/keyrack/keyrack/appliance/officerkey"
)

func TestAuthFailuresAreThrottled(t *testing.T) {
	e := newDeviceEnv(t, false)
	bad := "krk_c_line-a_" + strings.Repeat("0", 64)
	for i := 0; i < 10; i++ {
		code, _, _ := e.call("", "POST", "/v1/request-id", "", nil, map[string]string{"api-key": bad, "X-Forwarded-For": "10.9.9." + string(rune('0'+i))})
		if code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i, code)
		}
	}
	// Blocked now, even with the right key and a forged forwarding header.
	code, hdr, raw := e.call("line-a", "POST", "/v1/request-id", "", nil, map[string]string{"X-Forwarded-For": "10.1.2.3"})
	if code != http.StatusTooManyRequests || hdr.Get("Retry-After") == "" || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("after 10 failures: %d %v %s", code, hdr, raw)
	}
	// Officer endpoints from the same address too.
	if a := e.do("alice", "GET", "/v1/keys", nil); a.Status != http.StatusTooManyRequests {
		t.Fatalf("officer after 10 failures from the address: %d", a.Status)
	}
	// And logging in (officers log in with their key for a session now).
	if a := e.do("", "POST", "/v1/login/challenge", map[string]any{"officer": "carol"}); a.Status != http.StatusTooManyRequests {
		t.Fatalf("login after 10 failures from the address: %d %s", a.Status, a.Raw)
	}
}

// TestLoginFailuresAreThrottled: failed officer logins (a bad signature,
// an unknown officer, another officer's key) and bearer tokens that are
// no session count against the source address like failed API keys;
// past the limit the address is blocked, for logins and sessions alike,
// even for an officer whose name was never tried.
func TestLoginFailuresAreThrottled(t *testing.T) {
	e := newCeremonyEnv(t, 2, "1h")
	for i := 0; i < 10; i++ {
		var a answer
		switch i % 4 {
		case 0: // bad signature: alice's key, not over the login challenge
			a = e.loginAnswer("alice", e.keys["alice"], officerkey.DomainApproval)
		case 1: // unknown officer, each time another name
			a = e.loginAnswer("mallory-"+strconv.Itoa(i), newOfficerKey(t), officerkey.DomainLogin)
		case 2: // wrong key: bob's challenge signed with a key of nobody's
			a = e.loginAnswer("bob", newOfficerKey(t), officerkey.DomainLogin)
		case 3: // a bearer token that is no session
			a = e.do("krk_s_"+strings.Repeat(strconv.Itoa(i), 64), "GET", "/v1/keys", nil)
		}
		if a.Status != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d %s", i, a.Status, a.Raw)
		}
	}
	// Blocked now: carol's login (her name was never tried)...
	ch := e.do("", "POST", "/v1/login/challenge", map[string]any{"officer": "carol"})
	if ch.Status != http.StatusTooManyRequests || ch.errCode() != "rate-limited" {
		t.Fatalf("login challenge after 10 failures from the address: %d %s", ch.Status, ch.Raw)
	}
	// ...and a valid session.
	req, _ := http.NewRequest("GET", e.ts.URL+"/v1/keys", nil)
	req.Header.Set("Authorization", "Bearer "+e.creds["carol"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("officer session after 10 failures from the address: %d %v", resp.StatusCode, resp.Header)
	}
}
