package assertion

import (
	"crypto/rsa"
	"fmt"

	"github.com/snapcore/snapd/asserts"
)

// KeyID is pub's sign-key-sha3-384 / public-key-sha3-384, computed by
// snapd: base64url SHA3-384 of 0x01 and the v4 OpenPGP public-key packet
// dated 2016-01-01.
func KeyID(pub *rsa.PublicKey) (string, error) {
	if err := checkRSAPublic(pub); err != nil {
		return "", err
	}
	return asserts.RSAPublicKey(pub).ID(), nil
}

// EncodePublicKey is pub in the encoding account-key and
// account-key-request bodies (and serial device-key headers) carry.
func EncodePublicKey(pub *rsa.PublicKey) ([]byte, error) {
	if err := checkRSAPublic(pub); err != nil {
		return nil, err
	}
	b, err := asserts.EncodePublicKey(asserts.RSAPublicKey(pub))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
	}
	return b, nil
}
