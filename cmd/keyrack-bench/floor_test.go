package main

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyrack/keyrack/hsm"
	"github.com/keyrack/keyrack/softhsm"
)

// countingToken is a fresh SoftHSM token with two sessions and an RSA key
// of bits, and a count of the signatures it makes.
func countingToken(t *testing.T, bits int) (key *hsm.Key, sessions int, signed *atomic.Int64) {
	t.Helper()
	_, mod, cleanup, err := softhsm.OpenTemp("bench-floor", func(c *hsm.Config) { c.Sessions = 2 })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	t.Cleanup(func() { mod.Close() })
	key, err = mod.GenerateRSA(context.Background(), hsm.KeySpec{Label: "floor", Bits: bits})
	if err != nil {
		t.Fatal(err)
	}
	signed = new(atomic.Int64)
	mod.SetObserver(hsm.Observer{Sign: func(_ time.Duration, err error) {
		if err == nil {
			signed.Add(1)
		}
	}})
	return key, mod.Sessions(), signed
}

// TestHTTPFloor: the floor phase has a real token sign every request it
// counts, at both concurrency levels, and counts nothing else.
func TestHTTPFloor(t *testing.T) {
	key, sessions, signed := countingToken(t, 2048)
	rs, err := httpFloor(key, sessions, func(c int) int { return 3 * c })
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

// TestIntrinsicFloor: the intrinsic phase has the token sign every serial
// it counts, records each in its store, and fails when a device's
// signature does not verify (so the check is really made).
func TestIntrinsicFloor(t *testing.T) {
	key, _, signed := countingToken(t, 4096) // the Signer wants 4096 bits
	devs, err := benchDevices(2, 2048)       // the floor takes any device key size
	if err != nil {
		t.Fatal(err)
	}
	streams, err := floorStreams(key, devs, 12)
	if err != nil {
		t.Fatal(err)
	}
	r, rows, err := intrinsicFloor(key, 4, streams)
	if err != nil {
		t.Fatal(err)
	}
	if r.ok != 12 || r.other != 0 || r.concurrency != 4 {
		t.Fatalf("%d ok, %d failed at concurrency %d; want 12 ok at 4", r.ok, r.other, r.concurrency)
	}
	// The model floorStreams signs, and one serial each.
	if n := signed.Load(); n != 13 {
		t.Errorf("token made %d signatures, want 13", n)
	}
	if rows != 12 {
		t.Errorf("%d signing-log rows, want 12", rows)
	}

	// A serial-request whose device signature does not verify is
	// refused: one base64 character near the end of its signature (in
	// the RSA value) changed.
	bad := bytes.Clone(streams[0])
	sigStart := bytes.Index(bad, []byte("\n\n")) + 2 // no body: the signature follows the headers
	sigEnd := sigStart + bytes.Index(bad[sigStart:], []byte("\n\n"))
	if bad[sigEnd-10] == 'A' {
		bad[sigEnd-10] = 'B'
	} else {
		bad[sigEnd-10] = 'A'
	}
	if r, rows, err := intrinsicFloor(key, 1, [][]byte{bad, streams[1]}); err == nil || r.ok != 1 || r.other != 1 || rows != 1 {
		t.Fatalf("a serial-request with a broken signature: %d ok, %d failed, %d rows, err %v; want it alone refused", r.ok, r.other, rows, err)
	}
}
