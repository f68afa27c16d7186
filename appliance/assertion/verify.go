package assertion

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"errors"
	"math/big"
)

// errBadSignature: an RSA signature does not verify.
var errBadSignature = errors.New("RSA PKCS #1 v1.5 signature does not verify")

// sha512DigestInfo is the DER prefix of a SHA-512 DigestInfo (RFC 8017,
// section 9.2, note 1).
var sha512DigestInfo = []byte{0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40}

// verifySHA512 checks an RSA PKCS #1 v1.5 signature over a SHA-512 digest
// by computing sig^e mod n and comparing the whole result with the one
// encoding the digest has (no parsing of the padding, so nothing to get
// wrong there). It uses math/big: the operation is public (public key,
// released signature), so it needs no constant-time arithmetic, and for
// RSA-4096 math/big takes less than half the time crypto/rsa does (about
// 85 vs 200 µs here; crypto/rsa has no fast path for 4096-bit moduli and
// rebuilds its modulus tables on every call). The self-check runs it for
// every signature the token makes.
func verifySHA512(pub *rsa.PublicKey, digest, sig []byte) error {
	if len(digest) != crypto.SHA512.Size() {
		return errBadSignature
	}
	k := (pub.N.BitLen() + 7) / 8
	if len(sig) != k || k < len(sha512DigestInfo)+len(digest)+11 {
		return errBadSignature
	}
	s := new(big.Int).SetBytes(sig)
	if s.Cmp(pub.N) >= 0 {
		return errBadSignature
	}
	m := s.Exp(s, big.NewInt(int64(pub.E)), pub.N)
	got := m.FillBytes(make([]byte, k))

	want := make([]byte, k)
	want[1] = 0x01
	tail := k - len(sha512DigestInfo) - len(digest)
	for i := 2; i < tail-1; i++ {
		want[i] = 0xff
	}
	copy(want[tail:], sha512DigestInfo)
	copy(want[tail+len(sha512DigestInfo):], digest)
	if !bytes.Equal(got, want) {
		return errBadSignature
	}
	return nil
}
