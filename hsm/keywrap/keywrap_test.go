package keywrap

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"testing"
)

// RFC 5649 section 6 test vectors.
func TestRFC5649Vectors(t *testing.T) {
	kek, _ := hex.DecodeString("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8")
	for _, tc := range []struct{ key, wrapped string }{
		{"c37b7e6492584340bed12207808941155068f738", "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"},
		{"466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"},
	} {
		key, _ := hex.DecodeString(tc.key)
		want, _ := hex.DecodeString(tc.wrapped)
		got, err := WrapPad(kek, key)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("WrapPad(%s) = %x, %v; want %x", tc.key, got, err, want)
		}
		back, err := UnwrapPad(kek, want)
		if err != nil || !bytes.Equal(back, key) {
			t.Fatalf("UnwrapPad = %x, %v", back, err)
		}
	}
}

func TestUnwrapPadRejects(t *testing.T) {
	kek := make([]byte, 32)
	w, err := WrapPad(kek, bytes.Repeat([]byte{7}, 100))
	if err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string][]byte{
		"flipped": func() []byte { b := bytes.Clone(w); b[20] ^= 1; return b }(),
		"short":   w[:8],
		"odd":     w[:len(w)-3],
		"empty":   nil,
	} {
		if _, err := UnwrapPad(kek, bad); !errors.Is(err, ErrUnwrap) {
			t.Errorf("%s: %v", name, err)
		}
	}
	other := bytes.Repeat([]byte{1}, 32)
	if _, err := UnwrapPad(other, w); !errors.Is(err, ErrUnwrap) {
		t.Errorf("wrong KEK: %v", err)
	}
}

func TestWrapRoundTrip(t *testing.T) {
	priv, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 8, 9, 2375} {
		pt := bytes.Repeat([]byte{0x5a}, n)
		blob, err := Wrap(&priv.PublicKey, pt)
		if err != nil {
			t.Fatal(err)
		}
		if len(blob) < priv.Size()+16 {
			t.Fatalf("blob of %d bytes", len(blob))
		}
		back, err := Unwrap(priv, blob)
		if err != nil || !bytes.Equal(back, pt) {
			t.Fatalf("round trip of %d bytes: %v", n, err)
		}
		blob[3] ^= 1
		if _, err := Unwrap(priv, blob); !errors.Is(err, ErrUnwrap) {
			t.Fatalf("tampered OAEP part: %v", err)
		}
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	if _, err := Wrap(&small.PublicKey, []byte("x")); err == nil {
		t.Fatal("wrapped to a 1024-bit key")
	}
}
