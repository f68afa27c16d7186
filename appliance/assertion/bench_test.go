package assertion_test

import (
	"context"
	"crypto"
	"testing"
	"time"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance/assertion"
)

// BenchmarkSerialVsRaw prints, in one run and at the same concurrency
// (GOMAXPROCS callers), raw token signatures per second and complete
// serial assertions per second (assembly, token signature, self-check).
func BenchmarkSerialVsRaw(b *testing.B) {
	ctx := context.Background()
	b.Run("raw-token-sign", func(b *testing.B) {
		digest := make([]byte, 64)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := tokenKey.SignContext(ctx, digest, crypto.SHA512); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sig/s")
	})
	b.Run("serial-assertion", func(b *testing.B) {
		s := tokenSigner(b)
		in := assertion.Serial{BrandID: brandID, Model: "foo-1", Serial: "SN-1", DeviceKey: devicePub(), Timestamp: time.Now()}
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Serial(in); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "serial/s")
	})
}

// BenchmarkSelfCheck is the cost of the decode + signature verification
// every signed assertion goes through before it leaves the appliance.
func BenchmarkSelfCheck(b *testing.B) {
	s := tokenSigner(b)
	sg, err := s.Serial(assertion.Serial{BrandID: brandID, Model: "foo-1", Serial: "SN-1", DeviceKey: devicePub(), Timestamp: time.Now()})
	if err != nil {
		b.Fatal(err)
	}
	pub := tokenPub()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a, err := asserts.Decode(sg.Bytes)
		if err != nil {
			b.Fatal(err)
		}
		if err := asserts.SignatureCheck(a, pub); err != nil {
			b.Fatal(err)
		}
	}
}
