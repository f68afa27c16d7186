package assertion_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"testing"
	"time"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance/assertion"
)

// BenchmarkSerial is one complete serial assertion with an in-memory
// RSA-4096 key: validation, pre-signing decode, assembly, signature and
// the self-check decode + verification. With a token, the RSA part is the
// token's time instead.
func BenchmarkSerial(b *testing.B) {
	s := brandSigner(b)
	in := assertion.Serial{BrandID: brandID, Model: "foo-1", Serial: "SN-1", DeviceKey: devicePub(), Timestamp: fixed,
		Body: []byte("HW-DETAILS: x\nmac: 00:11:22\n")}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Serial(in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSelfCheckDecode is the self-check alone: decode of the signed
// bytes and signature verification, done once per signed assertion (the
// pre-signing decode costs about the decode part of it again).
func BenchmarkSelfCheckDecode(b *testing.B) {
	sg, err := brandSigner(b).Serial(assertion.Serial{BrandID: brandID, Model: "foo-1", Serial: "SN-1", DeviceKey: devicePub(),
		Timestamp: time.Now(), Body: []byte("HW-DETAILS: x\nmac: 00:11:22\n")})
	if err != nil {
		b.Fatal(err)
	}
	pub := brandPub()
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := asserts.Decode(sg.Bytes); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode+verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			a, err := asserts.Decode(sg.Bytes)
			if err != nil {
				b.Fatal(err)
			}
			if err := asserts.SignatureCheck(a, pub); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRawRSASign is the RSA-4096 PKCS#1 v1.5 operation alone, the
// floor under BenchmarkSerial with an in-memory key.
func BenchmarkRawRSASign(b *testing.B) {
	digest := sha512.Sum512([]byte("content"))
	for b.Loop() {
		if _, err := rsa.SignPKCS1v15(rand.Reader, brandPriv, crypto.SHA512, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
}
