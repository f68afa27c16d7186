package main

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance/device"
)

// Fresh device keys for every serial. A model whose serials the appliance
// assigns gives a device key one serial and answers it with the stored
// serial ever after, without signing: a bench that reused a few keys would
// measure that answer, not issuance. So every timed request comes from a
// device key of its own, RSA-4096 as snapd makes them. Generating thousands
// of those takes far longer than the bench, so the keys are built from a
// pool of 2048-bit primes, each key from a different pair: P primes give
// P(P-1)/2 keys, and a key costs only the arithmetic around its pair. Keys
// sharing a prime are trivially factored together; these are simulated
// devices, and the appliance neither can nor should tell.

const devicePrimeBits = 2048 // two make an RSA-4096 modulus

type keyPool struct {
	brand, model string
	assertion    []byte // the model assertion the devices send
	// cache, if not empty, is a file the primes are kept in from run to
	// run (they are not secret: the devices are simulated), so that only
	// the first run makes them.
	cache  string
	loaded bool
	primes []*big.Int
	used   int // pairs taken, in the order (0,1) (0,2) (1,2) (0,3) ...
}

// take returns n devices, each with a key no earlier take returned.
func (kp *keyPool) take(n int) ([]*device.Device, error) {
	if !kp.loaded {
		kp.loaded = true
		kp.load()
	}
	p := len(kp.primes)
	for p*(p-1)/2 < kp.used+n {
		p++
	}
	if err := kp.grow(p - len(kp.primes)); err != nil {
		return nil, err
	}
	// Pair number m is (i, j) with j(j-1)/2 <= m < j(j+1)/2, i = m - j(j-1)/2.
	first := kp.used
	kp.used += n
	devs := make([]*device.Device, n)
	errs := make([]error, n)
	parallel(n, func(k int) {
		m := first + k
		j := 1
		for (j+1)*j/2 <= m {
			j++
		}
		i := m - j*(j-1)/2
		key, err := rsaFromPrimes(kp.primes[i], kp.primes[j])
		if err == nil {
			devs[k] = &device.Device{Key: asserts.RSAPrivateKey(key), Brand: kp.brand, Model: kp.model, ModelAssertion: kp.assertion}
		}
		errs[k] = err
	})
	return devs, errors.Join(errs...)
}

// grow adds n primes to the pool, made on every core.
func (kp *keyPool) grow(n int) error {
	if n == 0 {
		return nil
	}
	ps := make([]*big.Int, n)
	errs := make([]error, n)
	e := big.NewInt(65537)
	one := big.NewInt(1)
	parallel(n, func(k int) {
		for {
			p, err := rand.Prime(rand.Reader, devicePrimeBits)
			if err != nil {
				errs[k] = err
				return
			}
			// e must be invertible modulo p-1.
			if new(big.Int).GCD(nil, nil, e, new(big.Int).Sub(p, one)).Cmp(one) == 0 {
				ps[k] = p
				return
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	kp.primes = append(kp.primes, ps...)
	kp.save()
	return nil
}

// load reads the cache, if any: a prime in hex a line. Anything that is
// not a usable prime of the size ends the list; the pool makes the rest.
func (kp *keyPool) load() {
	if kp.cache == "" {
		return
	}
	b, err := os.ReadFile(kp.cache)
	if err != nil {
		return
	}
	for _, line := range strings.Fields(string(b)) {
		p, ok := new(big.Int).SetString(line, 16)
		if !ok || p.BitLen() != devicePrimeBits || !p.ProbablyPrime(20) {
			break
		}
		kp.primes = append(kp.primes, p)
	}
}

// save writes the pool to the cache; failing to is no reason to stop.
func (kp *keyPool) save() {
	if kp.cache == "" {
		return
	}
	var b strings.Builder
	for _, p := range kp.primes {
		b.WriteString(p.Text(16) + "\n")
	}
	if os.MkdirAll(filepath.Dir(kp.cache), 0o700) == nil {
		os.WriteFile(kp.cache, []byte(b.String()), 0o600)
	}
}

// rsaFromPrimes is the RSA key with e = 65537 and primes p and q.
func rsaFromPrimes(p, q *big.Int) (*rsa.PrivateKey, error) {
	one := big.NewInt(1)
	e := big.NewInt(65537)
	phi := new(big.Int).Mul(new(big.Int).Sub(p, one), new(big.Int).Sub(q, one))
	d := new(big.Int).ModInverse(e, phi)
	if d == nil {
		return nil, fmt.Errorf("device key: e not invertible")
	}
	k := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: new(big.Int).Mul(p, q), E: 65537}, D: d, Primes: []*big.Int{p, q}}
	if k.N.BitLen() != 2*devicePrimeBits {
		return nil, fmt.Errorf("device key: a %d-bit modulus", k.N.BitLen())
	}
	if err := k.Validate(); err != nil {
		return nil, fmt.Errorf("device key: %w", err)
	}
	k.Precompute()
	return k, nil
}

// parallel runs fn(0..n-1) on every core.
func parallel(n int, fn func(k int)) {
	next := make(chan int, n)
	for k := range n {
		next <- k
	}
	close(next)
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Go(func() {
			for k := range next {
				fn(k)
			}
		})
	}
	wg.Wait()
}
