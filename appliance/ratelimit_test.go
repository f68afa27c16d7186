package appliance

import (
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
