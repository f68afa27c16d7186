package appliance

import (
	"crypto/rsa"

	"github.com/snapcore/snapd/asserts"
)

// snapKeyID is the key's sign-key-sha3-384 / public-key-sha3-384, as snapd
// computes it.
func snapKeyID(pub *rsa.PublicKey) (string, error) {
	return asserts.RSAPublicKey(pub).ID(), nil
}

// snapPublicKey is the public key in account-key body encoding: what
// `snap export-key NAME` prints and asserts.DecodePublicKey reads. That
// encoding is base64 text already; it is not encoded again.
func snapPublicKey(pub *rsa.PublicKey) (string, error) {
	b, err := asserts.EncodePublicKey(asserts.RSAPublicKey(pub))
	if err != nil {
		return "", err
	}
	return string(b), nil
}
