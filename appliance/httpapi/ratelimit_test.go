package httpapi

import (
	"net/http"
	"strings"
	"testing"
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
}
