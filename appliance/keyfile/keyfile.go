// Package keyfile reads the private-key files officers bring to a key
// ceremony: the ASCII-armored OpenPGP secret key that `snap create-key` +
// `gpg --armor --export-secret-key` give (what Serial Vault users have
// today), PKCS#8 and PKCS#1 PEM, or PKCS#8 DER. It only parses and checks;
// the key then goes straight into the wrap-and-unwrap path, and callers
// zero it with Zero.
//
// It imports nothing of keyrack's.
package keyfile

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	"golang.org/x/crypto/openpgp"
	"golang.org/x/crypto/openpgp/armor"
	"golang.org/x/crypto/openpgp/packet"
)

// Refusals, each with a message an officer can act on.
var (
	ErrPassphrase   = errors.New("the key is protected by a passphrase: keyrack never holds passphrases; export the key without one on the officer's machine (gpg --passwd to clear it on a copy) and wrap it with `keyrack wrap`")
	ErrNotRSA       = errors.New("the key is not an RSA key: snap signing keys are RSA")
	ErrTooSmall     = errors.New("the RSA key is too small")
	ErrUnrecognized = errors.New("not a private key keyrack reads (armored OpenPGP secret key, PKCS#8 or PKCS#1 PEM, PKCS#8 DER)")
	ErrPublicOnly   = errors.New("the file holds only a public key: export the secret key (gpg --armor --export-secret-key)")
	ErrMultiple     = errors.New("the file holds more than one secret key: export exactly one")
)

// Info describes a parsed key without anything secret.
type Info struct {
	Format string // "openpgp", "pkcs8", "pkcs1"
	Bits   int
	// OpenPGP only: the key's fingerprint (hex) and creation time.
	Fingerprint string
	Created     time.Time
}

// Parse reads one RSA private key of at least minBits bits from data. It
// never returns key material in an error.
func Parse(data []byte, minBits int) (*rsa.PrivateKey, Info, error) {
	trimmed := bytes.TrimSpace(data)
	var (
		key  *rsa.PrivateKey
		info Info
		err  error
	)
	switch {
	case bytes.HasPrefix(trimmed, []byte("-----BEGIN PGP PRIVATE KEY BLOCK-----")):
		key, info, err = parseOpenPGP(trimmed)
	case bytes.HasPrefix(trimmed, []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----")):
		return nil, Info{}, ErrPublicOnly
	case bytes.HasPrefix(trimmed, []byte("-----BEGIN")):
		key, info, err = parsePEM(trimmed)
	default:
		// Binary DER is parsed as given: trimming could eat a last byte
		// that happens to be a whitespace character.
		key, info, err = parseDER(data)
	}
	if err != nil {
		return nil, Info{}, err
	}
	if err := key.Validate(); err != nil {
		Zero(key)
		return nil, Info{}, fmt.Errorf("%w: the RSA key is inconsistent", ErrUnrecognized)
	}
	info.Bits = key.N.BitLen()
	if info.Bits < minBits {
		Zero(key)
		return nil, Info{}, fmt.Errorf("%w: RSA-%d, at least %d bits needed", ErrTooSmall, info.Bits, minBits)
	}
	return key, info, nil
}

func parseOpenPGP(data []byte) (*rsa.PrivateKey, Info, error) {
	block, err := armor.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, Info{}, fmt.Errorf("%w: broken ASCII armor (%v)", ErrUnrecognized, err)
	}
	if block.Type != openpgp.PrivateKeyType {
		return nil, Info{}, fmt.Errorf("%w: armor block is %q", ErrUnrecognized, block.Type)
	}
	ents, err := openpgp.ReadKeyRing(block.Body)
	if err != nil {
		return nil, Info{}, fmt.Errorf("%w: unreadable OpenPGP key (%v)", ErrUnrecognized, err)
	}
	var found *packet.PrivateKey
	for _, e := range ents {
		if e.PrivateKey == nil {
			continue
		}
		if found != nil {
			return nil, Info{}, ErrMultiple
		}
		found = e.PrivateKey
	}
	if found == nil {
		return nil, Info{}, ErrPublicOnly
	}
	if found.Encrypted {
		return nil, Info{}, ErrPassphrase
	}
	rk, ok := found.PrivateKey.(*rsa.PrivateKey)
	if !ok {
		return nil, Info{}, ErrNotRSA
	}
	return rk, Info{Format: "openpgp", Fingerprint: fmt.Sprintf("%X", found.Fingerprint), Created: found.CreationTime.UTC()}, nil
}

func parsePEM(data []byte) (*rsa.PrivateKey, Info, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, Info{}, fmt.Errorf("%w: broken PEM", ErrUnrecognized)
	}
	defer clear(block.Bytes)
	if next, _ := pem.Decode(rest); next != nil {
		clear(next.Bytes)
		return nil, Info{}, ErrMultiple
	}
	if _, encrypted := block.Headers["DEK-Info"]; encrypted || block.Type == "ENCRYPTED PRIVATE KEY" {
		return nil, Info{}, ErrPassphrase
	}
	switch block.Type {
	case "PRIVATE KEY":
		return parsePKCS8(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, Info{}, fmt.Errorf("%w: bad PKCS#1 key", ErrUnrecognized)
		}
		return k, Info{Format: "pkcs1"}, nil
	case "PUBLIC KEY", "RSA PUBLIC KEY", "CERTIFICATE":
		return nil, Info{}, ErrPublicOnly
	case "EC PRIVATE KEY", "OPENSSH PRIVATE KEY":
		return nil, Info{}, ErrNotRSA
	}
	return nil, Info{}, fmt.Errorf("%w: PEM block %q", ErrUnrecognized, block.Type)
}

func parseDER(data []byte) (*rsa.PrivateKey, Info, error) {
	if len(data) == 0 {
		return nil, Info{}, fmt.Errorf("%w: empty file", ErrUnrecognized)
	}
	return parsePKCS8(data)
}

func parsePKCS8(der []byte) (*rsa.PrivateKey, Info, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, Info{}, fmt.Errorf("%w: bad PKCS#8 key", ErrUnrecognized)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, Info{}, ErrNotRSA
	}
	return rk, Info{Format: "pkcs8"}, nil
}

// PKCS8 encodes key as PKCS#8 DER, the form the token unwraps. The caller
// zeroes the result after use.
func PKCS8(key *rsa.PrivateKey) ([]byte, error) {
	return x509.MarshalPKCS8PrivateKey(key)
}

// Zero overwrites the private numbers of key. Go gives no guarantee that
// no copy exists elsewhere (the garbage collector may have moved them), so
// this narrows the window rather than closing it; the only complete answer
// is the wrapped path, where the appliance never sees the key.
func Zero(key *rsa.PrivateKey) {
	if key == nil {
		return
	}
	for _, n := range append([]*big.Int{key.D, key.Precomputed.Dp, key.Precomputed.Dq, key.Precomputed.Qinv}, key.Primes...) {
		if n != nil {
			clear(n.Bits())
			n.SetInt64(0)
		}
	}
}
