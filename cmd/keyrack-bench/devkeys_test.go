package main

import "testing"

// TestKeyPool: every device a pool gives has a key of its own, of
// RSA-4096, made from two of the pool's primes; a second take gives new
// keys and grows the pool only as far as it needs.
func TestKeyPool(t *testing.T) {
	if testing.Short() {
		t.Skip("makes 2048-bit primes")
	}
	kp := &keyPool{brand: "b", model: "m"}
	a, err := kp.take(3) // 3 primes: (0,1) (0,2) (1,2)
	if err != nil {
		t.Fatal(err)
	}
	if len(kp.primes) != 3 {
		t.Errorf("%d primes for 3 keys, want 3", len(kp.primes))
	}
	b, err := kp.take(4) // 5 primes: 10 pairs, 7 taken
	if err != nil {
		t.Fatal(err)
	}
	if len(kp.primes) != 5 {
		t.Errorf("%d primes for 7 keys, want 5", len(kp.primes))
	}
	seen := map[string]bool{}
	for _, d := range append(a, b...) {
		id := d.Key.PublicKey().ID()
		if seen[id] {
			t.Errorf("key %s given twice", id)
		}
		seen[id] = true
		if d.Brand != "b" || d.Model != "m" {
			t.Errorf("device of %s/%s", d.Brand, d.Model)
		}
		sr, err := d.SerialRequest("rid", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(sr) == 0 {
			t.Error("empty serial-request")
		}
	}
	k, err := rsaFromPrimes(kp.primes[0], kp.primes[1])
	if err != nil {
		t.Fatal(err)
	}
	if k.N.BitLen() != 4096 {
		t.Errorf("a %d-bit modulus", k.N.BitLen())
	}
}
