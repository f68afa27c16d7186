package appliance

import (
	"fmt"
	"testing"
	"time"
)

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

// TestAuthLimiterBounded: however many sources fail, the limiter holds at
// most maxLimiterEntries of them.
func TestAuthLimiterBounded(t *testing.T) {
	l := newAuthLimiter(3, time.Minute)
	now := time.Now()
	for i := 0; i < maxLimiterEntries+5000; i++ {
		l.fail(now, fmt.Sprintf("addr:%d", i))
	}
	if n := len(l.entries); n > maxLimiterEntries {
		t.Fatalf("%d entries, bound %d", n, maxLimiterEntries)
	}
}

func TestSourceKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":            "addr:192.0.2.1",
		"::ffff:192.0.2.1":     "addr:192.0.2.1",
		"2001:db8:1:2::1":      "net:2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::9": "net:2001:db8:1:2::/64",
		"2001:db8:1:3::1":      "net:2001:db8:1:3::/64",
	} {
		if got := sourceKey(in); got != want {
			t.Errorf("sourceKey(%q) = %q, want %q", in, got, want)
		}
	}
}
