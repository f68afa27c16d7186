package keyfile

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/keyrack/keyrack/appliance/keyfile/keyfiletest"
)

var (
	gpgOnce             sync.Once
	gpgPlain, gpgLocked []byte
)

func gpgKeys(t *testing.T) ([]byte, []byte) {
	gpgOnce.Do(func() {
		gpgPlain = keyfiletest.GPGExport(t, 4096, "")
		gpgLocked = keyfiletest.GPGExport(t, 4096, "correct horse")
	})
	if gpgPlain == nil {
		t.Fatal("gpg fixtures failed")
	}
	return gpgPlain, gpgLocked
}

func TestOpenPGPFromGPG(t *testing.T) {
	plain, locked := gpgKeys(t)
	k, info, err := Parse(plain, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if info.Format != "openpgp" || info.Bits != 4096 || len(info.Fingerprint) != 40 || info.Created.IsZero() {
		t.Fatalf("info %+v", info)
	}
	Zero(k)
	if k.D.Sign() != 0 || k.Primes[0].Sign() != 0 {
		t.Fatal("Zero left private numbers")
	}

	_, _, err = Parse(locked, 4096)
	if !errors.Is(err, ErrPassphrase) {
		t.Fatalf("passphrase-protected key: %v", err)
	}
	if !strings.Contains(err.Error(), "passphrase") {
		t.Fatalf("message does not say passphrase: %v", err)
	}
	if strings.Contains(err.Error(), "Not an RSA private key") {
		t.Fatal("the Serial Vault message")
	}
}

func TestPEMAndDER(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 4096)
	if err != nil {
		t.Fatal(err)
	}
	p8, _ := x509.MarshalPKCS8PrivateKey(k)
	p1 := x509.MarshalPKCS1PrivateKey(k)
	for name, in := range map[string][]byte{
		"pkcs8 pem": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}),
		"pkcs1 pem": pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: p1}),
		"pkcs8 der": p8,
	} {
		got, info, err := Parse(in, 4096)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got.N.Cmp(k.N) != 0 || info.Bits != 4096 {
			t.Fatalf("%s: another key", name)
		}
	}
}

// TestDERNotTrimmed: a DER key whose encoding ends in a byte that is also
// ASCII whitespace must parse (found as a 2% flake with random keys).
func TestDERNotTrimmed(t *testing.T) {
	for i := 0; i < 2000; i++ {
		k, err := rsa.GenerateKey(rand.Reader, 1024)
		if err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		switch der[len(der)-1] {
		case ' ', '\t', '\n', '\v', '\f', '\r':
			if _, _, err := Parse(der, 1024); err != nil {
				t.Fatalf("DER ending in %#x: %v", der[len(der)-1], err)
			}
			return
		}
	}
	t.Fatal("no key ending in a whitespace byte among 2000 (expected about 47)")
}

func TestRefusals(t *testing.T) {
	plain, _ := gpgKeys(t)
	small, _ := rsa.GenerateKey(rand.Reader, 2048)
	small8, _ := x509.MarshalPKCS8PrivateKey(small)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec8, _ := x509.MarshalPKCS8PrivateKey(ec)
	armoredLines := strings.Split(string(plain), "\n")
	truncated := strings.Join(armoredLines[:len(armoredLines)/2], "\n")
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}})
	for name, tc := range map[string]struct {
		in   []byte
		want error
	}{
		"RSA-2048":        {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: small8}), ErrTooSmall},
		"EC PKCS#8":       {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ec8}), ErrNotRSA},
		"truncated armor": {[]byte(truncated), ErrUnrecognized},
		"garbage":         {[]byte("hello, world"), ErrUnrecognized},
		"empty":           {nil, ErrUnrecognized},
		"public key":      {pub, ErrPublicOnly},
		"encrypted pem":   {pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), ErrPassphrase},
		"two keys":        {append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: small8}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: small8})...), ErrMultiple},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := Parse(tc.in, 4096)
			if !errors.Is(err, tc.want) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
		})
	}
}
