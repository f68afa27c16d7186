package hsm

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/asn1"
	"fmt"
	"math/big"

	"github.com/miekg/pkcs11"
)

// ECDSA P-256 keys sign what keyrack itself asserts (its audit
// checkpoints), never snap assertions: snapd takes RSA only. SoftHSM
// generates and signs with them fast (a P-256 signature is a fraction of
// an RSA-4096 one), and crypto/ecdsa verifies them anywhere.

// oidP256 is the DER of the named curve prime256v1 (secp256r1), the
// CKA_EC_PARAMS of a P-256 key.
var oidP256 = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

var mechECDSA = []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}

// GenerateECDSA makes a P-256 key pair inside the token with the same
// attributes as GenerateRSA's (private, sensitive, never extractable, one
// usage, which must be UsageSign: an EC key here never unwraps). It
// refuses to reuse a label or an id.
func (m *Module) GenerateECDSA(ctx context.Context, spec KeySpec) (*Key, error) {
	if spec.Label == "" {
		return nil, fmt.Errorf("%w: a key label is required", ErrInvalidArgument)
	}
	if spec.Usage != UsageSign {
		return nil, fmt.Errorf("%w: EC key usage %v (sign only)", ErrInvalidArgument, spec.Usage)
	}
	if spec.Bits != 0 && spec.Bits != 256 {
		return nil, fmt.Errorf("%w: EC key size %d (P-256 only)", ErrInvalidArgument, spec.Bits)
	}
	return m.generatePair(ctx, "generate EC key", &spec, pkcs11.CKM_EC_KEY_PAIR_GEN, func() (pub, priv []*pkcs11.Attribute) {
		pub = withKeyType(publicKeyTemplate(spec.Usage, spec.Label, spec.ID,
			pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, oidP256)), pkcs11.CKK_EC)
		return pub, withKeyType(privateKeyTemplate(spec.Usage, spec.Label, spec.ID), pkcs11.CKK_EC)
	}, func(ki KeyInfo) error {
		if ki.EC == nil {
			return fmt.Errorf("hsm: the token made an EC key whose public half cannot be read (id %x)", spec.ID)
		}
		return nil
	})
}

// withKeyType replaces the CKA_KEY_TYPE of a template (the shared
// templates say RSA).
func withKeyType(t []*pkcs11.Attribute, kt uint) []*pkcs11.Attribute {
	out := make([]*pkcs11.Attribute, 0, len(t))
	for _, a := range t {
		if a.Type == pkcs11.CKA_KEY_TYPE {
			a = pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, kt)
		}
		out = append(out, a)
	}
	return out
}

// readECPublic reads the public point of the EC private key h. A private
// key object carries CKA_EC_PARAMS but not the point (PKCS#11 puts
// CKA_EC_POINT on the public object only), so the public object with the
// same CKA_ID is read. Keys on a curve other than P-256 give a nil key:
// keyrack does not use them.
func (m *Module) readECPublic(sh pkcs11.SessionHandle, h pkcs11.ObjectHandle, id []byte) (*ecdsa.PublicKey, error) {
	pa, err := m.p.GetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, nil)})
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(pa[0].Value, oidP256) {
		return nil, nil
	}
	hs, err := m.findObjects(sh, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}, 2)
	if err != nil {
		return nil, err
	}
	if len(hs) != 1 {
		return nil, fmt.Errorf("hsm: EC key %x has %d public key objects, want 1", id, len(hs))
	}
	pt, err := m.p.GetAttributeValue(sh, hs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil)})
	if err != nil {
		return nil, err
	}
	point := pt[0].Value
	// PKCS#11 says CKA_EC_POINT is the DER OCTET STRING of the point;
	// some tokens give the bare point. Take either.
	var inner []byte
	if rest, err := asn1.Unmarshal(point, &inner); err == nil && len(rest) == 0 {
		point = inner
	}
	x, y := elliptic.Unmarshal(elliptic.P256(), point) //nolint:staticcheck // the uncompressed point of PKCS#11, checked on the curve
	if x == nil {
		return nil, fmt.Errorf("hsm: token returned an invalid P-256 point for id %x", id)
	}
	return &ecdsa.PublicKey{Curve: elliptic.P256(), X: x, Y: y}, nil
}

// signECDSA signs digest with CKM_ECDSA (the token signs the bytes it is
// given, so the hash is the caller's) and returns the ASN.1 form that
// crypto/ecdsa's VerifyASN1 and crypto.Signer callers expect; the token
// gives r || s.
func (k *Key) signECDSA(ctx context.Context, digest []byte) ([]byte, error) {
	if len(digest) < 20 || len(digest) > 64 {
		return nil, fmt.Errorf("%w: a %d-byte digest", ErrInvalidArgument, len(digest))
	}
	var raw []byte
	err := k.m.do(ctx, "sign", func(sh pkcs11.SessionHandle, gen uint64) error {
		h, err := k.handleFor(sh, gen)
		if err != nil {
			return err
		}
		k.m.signCall(func() {
			if err = k.m.p.SignInit(sh, mechECDSA, h); err == nil {
				raw, err = k.m.p.Sign(sh, digest)
			}
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(raw) != 64 {
		return nil, fmt.Errorf("hsm: token returned a %d-byte P-256 signature, want 64", len(raw))
	}
	return asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(raw[:32]), new(big.Int).SetBytes(raw[32:])})
}
