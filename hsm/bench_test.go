package hsm_test

import (
	"context"
	"crypto"
	"testing"
)

const cryptoSHA512 = crypto.SHA512

// BenchmarkSignRSA4096 measures token signatures per second with as many
// concurrent callers as there are worker sessions (-cpu sets GOMAXPROCS;
// RunParallel runs GOMAXPROCS callers).
func BenchmarkSignRSA4096(b *testing.B) {
	k := sharedKey(b)
	digest := make([]byte, 64)
	ctx := context.Background()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := k.SignContext(ctx, digest, cryptoSHA512); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sig/s")
}
