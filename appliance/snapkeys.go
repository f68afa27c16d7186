package appliance

import (
	"crypto/rsa"
	"encoding/base64"

	"github.com/snapcore/snapd/asserts"
)

// snapKeyID is the key's sign-key-sha3-384 / public-key-sha3-384, as snapd
// computes it.
func snapKeyID(pub *rsa.PublicKey) (string, error) {
	return asserts.RSAPublicKey(pub).ID(), nil
}

// snapPublicKey is the public key in account-key body encoding, base64.
func snapPublicKey(pub *rsa.PublicKey) (string, error) {
	b, err := asserts.EncodePublicKey(asserts.RSAPublicKey(pub))
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}
