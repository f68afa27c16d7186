package appliance

import (
	"net/http"
	"strings"
	"testing"
	"time"
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

func TestAuthLimiter(t *testing.T) {
	l := newAuthLimiter(3, time.Minute)
	now := time.Now()
	for i := 0; i < 3; i++ {
		if l.blocked(now, "name:x") > 0 {
			t.Fatal("blocked too early")
		}
		l.fail(now, "addr:a", "name:x")
	}
	if l.blocked(now, "name:x") == 0 || l.blocked(now, "addr:a") == 0 {
		t.Fatal("not blocked after the limit")
	}
	if l.blocked(now, "name:y", "addr:b") > 0 {
		t.Fatal("other keys blocked")
	}
	if l.blocked(now.Add(61*time.Second), "name:x") > 0 {
		t.Fatal("still blocked after the window")
	}
	// A new window starts the count again.
	l.fail(now.Add(2*time.Minute), "name:z")
	l.fail(now.Add(4*time.Minute), "name:z")
	if l.blocked(now.Add(4*time.Minute), "name:z") > 0 {
		t.Fatal("failures in different windows added up")
	}
}
