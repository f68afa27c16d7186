package assertion

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"math/big"
	"testing"
)

// TestVerifySHA512 checks the self-check's verifier against crypto/rsa:
// it accepts exactly the signatures crypto/rsa makes and refuses every
// altered signature, digest or key.
func TestVerifySHA512(t *testing.T) {
	for _, bits := range []int{2048, 3072, 4096} {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatal(err)
		}
		other, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 8; i++ {
			d := sha512.Sum512([]byte{byte(bits), byte(i)})
			sig, err := rsa.SignPKCS1v15(nil, k, crypto.SHA512, d[:])
			if err != nil {
				t.Fatal(err)
			}
			if err := verifySHA512(&k.PublicKey, d[:], sig); err != nil {
				t.Fatalf("RSA-%d: a valid signature is refused: %v", bits, err)
			}
			if err := verifySHA512(&other.PublicKey, d[:], sig); err == nil {
				t.Errorf("RSA-%d: accepted with another key", bits)
			}
			for _, pos := range []int{0, 1, len(sig) / 2, len(sig) - 1} {
				bad := append([]byte(nil), sig...)
				bad[pos] ^= 0x01
				if err := verifySHA512(&k.PublicKey, d[:], bad); err == nil {
					t.Errorf("RSA-%d: accepted with bit flipped at byte %d", bits, pos)
				}
			}
			wrong := d
			wrong[len(wrong)-1] ^= 0x80
			if err := verifySHA512(&k.PublicKey, wrong[:], sig); err == nil {
				t.Errorf("RSA-%d: accepted for another digest", bits)
			}
			if err := verifySHA512(&k.PublicKey, d[:], sig[1:]); err == nil {
				t.Errorf("RSA-%d: accepted a short signature", bits)
			}
			if err := verifySHA512(&k.PublicKey, d[:32], sig); err == nil {
				t.Errorf("RSA-%d: accepted a short digest", bits)
			}
			// sig + n has the same value mod n but is not a valid encoding.
			big1 := new(big.Int).Add(new(big.Int).SetBytes(sig), k.N)
			if b := big1.Bytes(); len(b) == len(sig) {
				if err := verifySHA512(&k.PublicKey, d[:], b); err == nil {
					t.Errorf("RSA-%d: accepted a signature >= n", bits)
				}
			}
		}
		// Another hash's DigestInfo under the same key is refused.
		d256 := make([]byte, 64)
		sig, err := rsa.SignPKCS1v15(nil, k, crypto.Hash(0), append([]byte{0x30, 0x31}, d256[:62]...))
		if err != nil {
			t.Fatal(err)
		}
		if err := verifySHA512(&k.PublicKey, d256, sig); err == nil {
			t.Errorf("RSA-%d: accepted a signature over another encoding", bits)
		}
	}
}

// BenchmarkVerify compares the self-check's verifier with crypto/rsa for
// the RSA-4096 keys the appliance signs with.
func BenchmarkVerify(b *testing.B) {
	k, err := rsa.GenerateKey(rand.Reader, 4096)
	if err != nil {
		b.Fatal(err)
	}
	d := sha512.Sum512([]byte("keyrack"))
	sig, err := rsa.SignPKCS1v15(nil, k, crypto.SHA512, d[:])
	if err != nil {
		b.Fatal(err)
	}
	b.Run("math-big", func(b *testing.B) {
		for b.Loop() {
			if err := verifySHA512(&k.PublicKey, d[:], sig); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("crypto-rsa", func(b *testing.B) {
		for b.Loop() {
			if err := rsa.VerifyPKCS1v15(&k.PublicKey, crypto.SHA512, d[:], sig); err != nil {
				b.Fatal(err)
			}
		}
	})
}
