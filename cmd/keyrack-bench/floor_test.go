package main

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyrack/keyrack/hsm"
	"github.com/keyrack/keyrack/softhsm"
)

// TestHTTPFloor: the floor phase has a real token sign every request it
// counts, at both concurrency levels, and counts nothing else.
func TestHTTPFloor(t *testing.T) {
	_, mod, cleanup, err := softhsm.OpenTemp("bench-floor", func(c *hsm.Config) { c.Sessions = 2 })
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	defer mod.Close()
	key, err := mod.GenerateRSA(context.Background(), hsm.KeySpec{Label: "floor", Bits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	var signed atomic.Int64
	mod.SetObserver(hsm.Observer{Sign: func(_ time.Duration, err error) {
		if err == nil {
			signed.Add(1)
		}
	}})
	rs, err := httpFloor(key, mod.Sessions(), func(c int) int { return 3 * c })
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].concurrency != 1 || rs[1].concurrency != 8 {
		t.Fatalf("phases %+v, want concurrency 1 then 8", rs)
	}
	for _, r := range rs {
		if r.ok != 3*r.concurrency || r.other != 0 || r.busy != 0 {
			t.Errorf("concurrency %d: %d ok, %d failed, %d busy; want %d ok", r.concurrency, r.ok, r.other, r.busy, 3*r.concurrency)
		}
	}
	if n := signed.Load(); n != 27 {
		t.Errorf("token made %d signatures, want 27", n)
	}
}
