// Package keywrap builds the wrapped-key blobs a keyrack appliance imports:
//
//	blob = RSA-OAEP(SHA-1, MGF1-SHA-1)(K) || AES-KWP_K(PKCS#8 private key)
//
// where K is a fresh AES-256 key and AES-KWP is RFC 5649 key wrap with
// padding. This is the byte layout of PKCS#11 CKM_RSA_AES_KEY_WRAP and of
// the cloud KMS "RSA_OAEP_3072_SHA1_AES_256" import method, so tokens can
// unwrap it in one call where they have that mechanism and in two
// (OAEP, then KWP) where they do not. SHA-1 is what SoftHSM 2.6 accepts for
// OAEP; it is used here only inside OAEP, where its collision weakness does
// not apply.
//
// The officer's side (keyrack wrap) and the appliance's armored-upload
// path use Wrap; tests use Unwrap to check blobs without a token.
//
// It imports nothing of keyrack's, so the officers' CLI can link it
// without the PKCS#11 binding.
package keywrap

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrUnwrap is any failure to unwrap: the caller learns only that the blob
// is bad, never which check failed (no padding oracle).
var ErrUnwrap = errors.New("keywrap: bad wrapped key")

// AESKeyBytes is the size of the ephemeral key K.
const AESKeyBytes = 32

// Wrap wraps plaintext (a PKCS#8 DER private key) to the import key pub.
// The ephemeral AES key is zeroed before Wrap returns.
func Wrap(pub *rsa.PublicKey, plaintext []byte) ([]byte, error) {
	if pub == nil || pub.N.BitLen() < 2048 {
		return nil, fmt.Errorf("keywrap: import key must be RSA of at least 2048 bits")
	}
	if len(plaintext) == 0 {
		return nil, fmt.Errorf("keywrap: nothing to wrap")
	}
	k := make([]byte, AESKeyBytes)
	defer clear(k)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	head, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, k, nil)
	if err != nil {
		return nil, fmt.Errorf("keywrap: OAEP: %w", err)
	}
	body, err := WrapPad(k, plaintext)
	if err != nil {
		return nil, err
	}
	return append(head, body...), nil
}

// Unwrap reverses Wrap with the import key's private half. The appliance
// never does this (its token does); it exists for tests and tools.
func Unwrap(priv *rsa.PrivateKey, blob []byte) ([]byte, error) {
	n := priv.Size()
	if len(blob) <= n+8 {
		return nil, ErrUnwrap
	}
	k, err := rsa.DecryptOAEP(sha1.New(), nil, priv, blob[:n], nil)
	if err != nil {
		return nil, ErrUnwrap
	}
	defer clear(k)
	return UnwrapPad(k, blob[n:])
}

// kwpIV is RFC 5649's alternative initial value prefix.
var kwpIV = [4]byte{0xA6, 0x59, 0x59, 0xA6}

// WrapPad is RFC 5649 AES key wrap with padding.
func WrapPad(kek, plaintext []byte) ([]byte, error) {
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("keywrap: %w", err)
	}
	if len(plaintext) == 0 || uint64(len(plaintext)) > 1<<32-1 {
		return nil, fmt.Errorf("keywrap: plaintext length %d out of range", len(plaintext))
	}
	var aiv [8]byte
	copy(aiv[:4], kwpIV[:])
	binary.BigEndian.PutUint32(aiv[4:], uint32(len(plaintext)))
	padded := make([]byte, (len(plaintext)+7)/8*8)
	defer clear(padded)
	copy(padded, plaintext)

	if len(padded) == 8 {
		// One block: a single AES encryption of AIV || P.
		out := make([]byte, 16)
		copy(out, aiv[:])
		copy(out[8:], padded)
		block.Encrypt(out, out)
		return out, nil
	}
	return wrapCore(block, aiv, padded), nil
}

// wrapCore is the RFC 3394 wrapping process W over 64-bit blocks.
func wrapCore(block cipher.Block, a [8]byte, p []byte) []byte {
	n := len(p) / 8
	out := make([]byte, 8+len(p))
	r := out[8:]
	copy(r, p)
	var b [16]byte
	for j := 0; j < 6; j++ {
		for i := 0; i < n; i++ {
			copy(b[:8], a[:])
			copy(b[8:], r[i*8:i*8+8])
			block.Encrypt(b[:], b[:])
			t := uint64(n*j + i + 1)
			binary.BigEndian.PutUint64(a[:], binary.BigEndian.Uint64(b[:8])^t)
			copy(r[i*8:], b[8:])
		}
	}
	copy(out[:8], a[:])
	clear(b[:])
	return out
}

// UnwrapPad reverses WrapPad. Every failure is ErrUnwrap.
func UnwrapPad(kek, wrapped []byte) ([]byte, error) {
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, ErrUnwrap
	}
	if len(wrapped) < 16 || len(wrapped)%8 != 0 {
		return nil, ErrUnwrap
	}
	var a [8]byte
	var p []byte
	if len(wrapped) == 16 {
		b := make([]byte, 16)
		block.Decrypt(b, wrapped)
		copy(a[:], b[:8])
		p = b[8:]
	} else {
		n := len(wrapped)/8 - 1
		copy(a[:], wrapped[:8])
		p = make([]byte, n*8)
		copy(p, wrapped[8:])
		var b [16]byte
		for j := 5; j >= 0; j-- {
			for i := n - 1; i >= 0; i-- {
				t := uint64(n*j + i + 1)
				binary.BigEndian.PutUint64(b[:8], binary.BigEndian.Uint64(a[:])^t)
				copy(b[8:], p[i*8:i*8+8])
				block.Decrypt(b[:], b[:])
				copy(a[:], b[:8])
				copy(p[i*8:], b[8:])
			}
		}
		clear(b[:])
	}
	mli := int(binary.BigEndian.Uint32(a[4:]))
	ok := subtle.ConstantTimeCompare(a[:4], kwpIV[:]) == 1 &&
		mli > len(p)-8 && mli <= len(p)
	if ok {
		var pad byte
		for _, c := range p[mli:] {
			pad |= c
		}
		ok = pad == 0
	}
	if !ok {
		clear(p)
		return nil, ErrUnwrap
	}
	return p[:mli], nil
}
