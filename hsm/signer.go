package hsm

import (
	"context"
	"crypto"
	"crypto/rsa"
	"fmt"
	"io"
	"time"

	"github.com/miekg/pkcs11"
)

// digestInfoPrefix is the DER prefix of PKCS#1 v1.5 DigestInfo per hash.
// CKM_RSA_PKCS signs exactly the bytes it is given, so the DigestInfo is
// built here; that keeps one mechanism for every hash and matches what
// OpenPGP (snap assertions) signs.
var digestInfoPrefix = map[crypto.Hash][]byte{
	crypto.SHA256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA384: {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA512: {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
}

var mechRSAPKCS = []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS, nil)}

// Public returns the key's public key (crypto.Signer): *rsa.PublicKey, or
// *ecdsa.PublicKey for a P-256 key.
func (k *Key) Public() crypto.PublicKey {
	if k.info.EC != nil {
		return k.info.EC
	}
	return k.info.Public
}

// Sign signs digest with RSASSA-PKCS1-v1_5 (ECDSA for a P-256 key, in
// ASN.1 form) inside the token
// (crypto.Signer). rand is ignored: the token has its own. It runs without
// a deadline other than the module's session wait; use SignContext or
// WithContext to bound it by a request's context.
func (k *Key) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return k.SignContext(context.Background(), digest, opts)
}

// SignContext is Sign bounded by ctx.
func (k *Key) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if k.info.EC != nil {
		if len(digest) != opts.HashFunc().Size() {
			return nil, fmt.Errorf("hsm: %w: digest is %d bytes, %v needs %d", ErrInvalidArgument, len(digest), opts.HashFunc(), opts.HashFunc().Size())
		}
		return k.signECDSA(ctx, digest)
	}
	if k.info.Public == nil {
		return nil, fmt.Errorf("hsm: %w: key %x is %s, not RSA", ErrUnsupported, k.info.ID, k.info.Type)
	}
	if _, ok := opts.(*rsa.PSSOptions); ok {
		return nil, fmt.Errorf("hsm: %w: RSA-PSS", ErrUnsupported)
	}
	prefix, ok := digestInfoPrefix[opts.HashFunc()]
	if !ok {
		return nil, fmt.Errorf("hsm: %w: hash %v", ErrUnsupported, opts.HashFunc())
	}
	if len(digest) != opts.HashFunc().Size() {
		return nil, fmt.Errorf("hsm: %w: digest is %d bytes, %v needs %d", ErrInvalidArgument, len(digest), opts.HashFunc(), opts.HashFunc().Size())
	}
	msg := make([]byte, 0, len(prefix)+len(digest))
	msg = append(append(msg, prefix...), digest...)
	var sig []byte
	err := k.m.do(ctx, "sign", func(sh pkcs11.SessionHandle, gen uint64) error {
		h, err := k.handleFor(sh, gen)
		if err != nil {
			return err
		}
		start := time.Now()
		k.m.signCall(func() {
			if err = k.m.p.SignInit(sh, mechRSAPKCS, h); err == nil {
				sig, err = k.m.p.Sign(sh, msg)
			}
		})
		k.m.observeSign(time.Since(start), err)
		return err
	})
	if err != nil {
		return nil, err
	}
	return sig, nil
}

// WithContext returns a crypto.Signer for k whose Sign is bounded by ctx,
// for libraries (OpenPGP) that take a plain crypto.Signer.
func (k *Key) WithContext(ctx context.Context) crypto.Signer {
	return ctxSigner{k: k, ctx: ctx}
}

type ctxSigner struct {
	k   *Key
	ctx context.Context
}

func (s ctxSigner) Public() crypto.PublicKey { return s.k.Public() }

func (s ctxSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.k.SignContext(s.ctx, digest, opts)
}
