package hsm

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"math/big"
	"sync"

	"github.com/miekg/pkcs11"
)

// Usage is what a generated key may do. A key has exactly one usage so
// that a signing key can never decrypt or unwrap and the reverse.
type Usage int

const (
	// UsageSign keys sign (assertions) and nothing else.
	UsageSign Usage = iota
	// UsageUnwrap keys unwrap imported keys and nothing else.
	UsageUnwrap
)

func (u Usage) String() string {
	switch u {
	case UsageSign:
		return "sign"
	case UsageUnwrap:
		return "unwrap"
	}
	return fmt.Sprintf("usage(%d)", int(u))
}

// KeyInfo is what the token says about a private key; nothing secret.
type KeyInfo struct {
	ID    []byte
	Label string
	// Type is "RSA", or the CKK_ name for keys keyrack cannot use.
	Type string
	Bits int
	// Local is CKA_LOCAL: true when the key was generated in the token,
	// false when it was imported (unwrapped or created).
	Local            bool
	Sensitive        bool
	Extractable      bool
	AlwaysSensitive  bool
	NeverExtractable bool
	Sign             bool
	Decrypt          bool
	Unwrap           bool
	// Public is the RSA public key (nil for other key types).
	Public *rsa.PublicKey
	// EC is the public key of a P-256 key (nil for other key types).
	EC *ecdsa.PublicKey
}

// Origin is "generated" for keys made inside the token and "imported" for
// keys that entered it from outside.
func (k KeyInfo) Origin() string {
	if k.Local {
		return "generated"
	}
	return "imported"
}

// KeySpec describes a key to generate.
type KeySpec struct {
	Label string
	// ID is the CKA_ID; 16 random bytes when empty.
	ID    []byte
	Bits  int // default 4096
	Usage Usage
}

// MinRSABits is the smallest RSA key keyrack generates or uses for signing.
const MinRSABits = 2048

// Key is a private key in the token. It is addressed by CKA_ID; the object
// handle is a cache that is re-found after the token is recovered.
type Key struct {
	m    *Module
	info KeyInfo

	mu     sync.Mutex
	handle pkcs11.ObjectHandle
	gen    uint64
}

// Info returns the key's public attributes as last read.
func (k *Key) Info() KeyInfo { return k.info }

// ID returns the key's CKA_ID.
func (k *Key) ID() []byte { return append([]byte(nil), k.info.ID...) }

// Label returns the key's CKA_LABEL.
func (k *Key) Label() string { return k.info.Label }

// handleFor returns the private key handle valid in generation gen. Called
// inside Module.do (read lock held).
func (k *Key) handleFor(sh pkcs11.SessionHandle, gen uint64) (pkcs11.ObjectHandle, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.gen == gen && k.handle != 0 {
		return k.handle, nil
	}
	hs, err := k.m.findObjects(sh, privateByID(k.info.ID), 2)
	if err != nil {
		return 0, err
	}
	if len(hs) == 0 {
		return 0, fmt.Errorf("hsm: %w (id %x)", ErrKeyNotFound, k.info.ID)
	}
	k.handle, k.gen = hs[0], gen
	return k.handle, nil
}

func privateByID(id []byte) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
}

// findObjects returns up to max handles matching tmpl.
func (m *Module) findObjects(sh pkcs11.SessionHandle, tmpl []*pkcs11.Attribute, max int) ([]pkcs11.ObjectHandle, error) {
	if err := m.p.FindObjectsInit(sh, tmpl); err != nil {
		return nil, err
	}
	var out []pkcs11.ObjectHandle
	for len(out) < max {
		hs, _, err := m.p.FindObjects(sh, min(64, max-len(out)))
		if err != nil {
			_ = m.p.FindObjectsFinal(sh)
			return nil, err
		}
		if len(hs) == 0 {
			break
		}
		out = append(out, hs...)
	}
	if err := m.p.FindObjectsFinal(sh); err != nil {
		return nil, err
	}
	return out, nil
}

// readInfo reads the public attributes of a private key object.
func (m *Module) readInfo(sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) (KeyInfo, error) {
	attrs, err := m.p.GetAttributeValue(sh, h, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_ID, nil),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_LOCAL, nil),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_ALWAYS_SENSITIVE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_NEVER_EXTRACTABLE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, nil),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, nil),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, nil),
	})
	if err != nil {
		return KeyInfo{}, err
	}
	var ki KeyInfo
	var keyType uint64
	for _, a := range attrs {
		switch a.Type {
		case pkcs11.CKA_ID:
			ki.ID = append([]byte(nil), a.Value...)
		case pkcs11.CKA_LABEL:
			ki.Label = string(a.Value)
		case pkcs11.CKA_KEY_TYPE:
			keyType = ulong(a.Value)
		case pkcs11.CKA_LOCAL:
			ki.Local = boolAttr(a.Value)
		case pkcs11.CKA_SENSITIVE:
			ki.Sensitive = boolAttr(a.Value)
		case pkcs11.CKA_EXTRACTABLE:
			ki.Extractable = boolAttr(a.Value)
		case pkcs11.CKA_ALWAYS_SENSITIVE:
			ki.AlwaysSensitive = boolAttr(a.Value)
		case pkcs11.CKA_NEVER_EXTRACTABLE:
			ki.NeverExtractable = boolAttr(a.Value)
		case pkcs11.CKA_SIGN:
			ki.Sign = boolAttr(a.Value)
		case pkcs11.CKA_DECRYPT:
			ki.Decrypt = boolAttr(a.Value)
		case pkcs11.CKA_UNWRAP:
			ki.Unwrap = boolAttr(a.Value)
		}
	}
	if keyType == pkcs11.CKK_EC {
		ki.Type = "EC"
		if ki.EC, err = m.readECPublic(sh, h, ki.ID); err != nil {
			return KeyInfo{}, err
		}
		if ki.EC != nil {
			ki.Bits = 256
		}
		return ki, nil
	}
	if keyType != pkcs11.CKK_RSA {
		ki.Type = keyTypeName(keyType)
		return ki, nil
	}
	ki.Type = "RSA"
	// CKA_MODULUS and CKA_PUBLIC_EXPONENT are public on an RSA private key
	// object, so the public half never depends on a separate object.
	pa, err := m.p.GetAttributeValue(sh, h, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_MODULUS, nil),
		pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, nil),
	})
	if err != nil {
		return KeyInfo{}, err
	}
	n := new(big.Int).SetBytes(pa[0].Value)
	e := new(big.Int).SetBytes(pa[1].Value)
	if n.Sign() == 0 || !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 {
		return KeyInfo{}, fmt.Errorf("hsm: token returned an invalid RSA public key for id %x", ki.ID)
	}
	ki.Public = &rsa.PublicKey{N: n, E: int(e.Int64())}
	ki.Bits = n.BitLen()
	return ki, nil
}

func keyTypeName(t uint64) string {
	switch t {
	case pkcs11.CKK_EC:
		return "EC"
	case 0x40: // CKK_EC_EDWARDS (PKCS#11 v3.0)
		return "EDDSA"
	case pkcs11.CKK_AES:
		return "AES"
	}
	return fmt.Sprintf("CKK_0x%x", t)
}

func boolAttr(v []byte) bool { return len(v) > 0 && v[0] != 0 }

// ulong decodes a CK_ULONG attribute (native byte order, little-endian on
// every platform keyrack builds for).
func ulong(v []byte) uint64 {
	var x uint64
	for i := len(v) - 1; i >= 0; i-- {
		x = x<<8 | uint64(v[i])
	}
	return x
}

// FindKey returns the private key with CKA_ID id.
func (m *Module) FindKey(ctx context.Context, id []byte) (*Key, error) {
	if len(id) == 0 {
		return nil, fmt.Errorf("%w: empty key id", ErrInvalidArgument)
	}
	return m.findKey(ctx, privateByID(id), fmt.Sprintf("id %x", id))
}

// FindKeyByLabel returns the private key with CKA_LABEL label.
func (m *Module) FindKeyByLabel(ctx context.Context, label string) (*Key, error) {
	if label == "" {
		return nil, fmt.Errorf("%w: empty key label", ErrInvalidArgument)
	}
	return m.findKey(ctx, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}, fmt.Sprintf("label %q", label))
}

func (m *Module) findKey(ctx context.Context, tmpl []*pkcs11.Attribute, what string) (*Key, error) {
	var k *Key
	err := m.do(ctx, "find key", func(sh pkcs11.SessionHandle, gen uint64) error {
		hs, err := m.findObjects(sh, tmpl, 2)
		if err != nil {
			return err
		}
		switch len(hs) {
		case 0:
			return fmt.Errorf("hsm: %w (%s)", ErrKeyNotFound, what)
		case 2:
			// Two keys under one name means someone bypassed keyrack;
			// signing with either would be a guess.
			return fmt.Errorf("hsm: more than one private key with %s", what)
		}
		ki, err := m.readInfo(sh, hs[0])
		if err != nil {
			return err
		}
		k = &Key{m: m, info: ki, handle: hs[0], gen: gen}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return k, nil
}

// ListKeys returns the public attributes of every private key in the token.
func (m *Module) ListKeys(ctx context.Context) ([]KeyInfo, error) {
	var out []KeyInfo
	err := m.do(ctx, "list keys", func(sh pkcs11.SessionHandle, gen uint64) error {
		out = out[:0]
		hs, err := m.findObjects(sh, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		}, 1<<16)
		if err != nil {
			return err
		}
		for _, h := range hs {
			ki, err := m.readInfo(sh, h)
			if err != nil {
				return err
			}
			out = append(out, ki)
		}
		return nil
	})
	return out, err
}

// GenerateRSA makes an RSA key pair inside the token: the private half is a
// token object, private, sensitive, never extractable, with exactly the
// spec's usage; the public half is a token object with the same CKA_ID and
// label. It refuses to reuse a label or an id.
func (m *Module) GenerateRSA(ctx context.Context, spec KeySpec) (*Key, error) {
	if spec.Label == "" {
		return nil, fmt.Errorf("%w: a key label is required", ErrInvalidArgument)
	}
	if spec.Bits == 0 {
		spec.Bits = 4096
	}
	if spec.Bits < MinRSABits || spec.Bits > 16384 || spec.Bits%8 != 0 {
		return nil, fmt.Errorf("%w: RSA key size %d (want a multiple of 8 from %d to 16384)", ErrInvalidArgument, spec.Bits, MinRSABits)
	}
	if spec.Usage != UsageSign && spec.Usage != UsageUnwrap {
		return nil, fmt.Errorf("%w: key usage %v", ErrInvalidArgument, spec.Usage)
	}
	return m.generatePair(ctx, "generate key", &spec, pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, func() (pub, priv []*pkcs11.Attribute) {
		pub = publicKeyTemplate(spec.Usage, spec.Label, spec.ID,
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, spec.Bits),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}))
		return pub, privateKeyTemplate(spec.Usage, spec.Label, spec.ID)
	}, nil)
}

// generatePair makes a key pair with mech from the templates that
// templates builds (called once create has settled spec.ID), under the
// label and id rules of create, and reads its info back. check, if not
// nil, refuses an info the caller cannot use. A pair whose info cannot be
// read or is refused is destroyed: nothing stays behind that no caller
// knows about.
func (m *Module) generatePair(ctx context.Context, op string, spec *KeySpec, mech uint, templates func() (pub, priv []*pkcs11.Attribute), check func(KeyInfo) error) (*Key, error) {
	var k *Key
	err := m.create(ctx, op, spec.Label, &spec.ID, nil, func(sh pkcs11.SessionHandle, gen uint64) error {
		pubT, privT := templates()
		pub, priv, err := m.p.GenerateKeyPair(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, pubT, privT)
		if err != nil {
			return err
		}
		ki, err := m.readInfo(sh, priv)
		if err == nil && check != nil {
			err = check(ki)
		}
		if err != nil {
			_ = m.p.DestroyObject(sh, priv)
			_ = m.p.DestroyObject(sh, pub)
			return err
		}
		k = &Key{m: m, info: ki, handle: priv, gen: gen}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return k, nil
}

func randomID() ([]byte, error) {
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("hsm: making a key id: %w", err)
	}
	return id, nil
}

// create runs fn, which makes a new key labelled label with CKA_ID *id, on
// a worker session and under the creation lock, after refusing a label or
// id that is already taken: keyrack never replaces a key. An empty *id is
// set to 16 random bytes first. retire is passed to doRetire.
func (m *Module) create(ctx context.Context, op, label string, id *[]byte, retire *bool, fn func(sh pkcs11.SessionHandle, gen uint64) error) error {
	if len(*id) == 0 {
		fresh, err := randomID()
		if err != nil {
			return err
		}
		*id = fresh
	}
	m.createMu.Lock()
	defer m.createMu.Unlock()
	return m.doRetire(ctx, op, retire, func(sh pkcs11.SessionHandle, gen uint64) error {
		if err := m.refuseExisting(sh, label, *id); err != nil {
			return err
		}
		return fn(sh, gen)
	})
}

// refuseExisting fails with ErrKeyExists if any object has label or id.
func (m *Module) refuseExisting(sh pkcs11.SessionHandle, label string, id []byte) error {
	for _, t := range [][]*pkcs11.Attribute{
		{pkcs11.NewAttribute(pkcs11.CKA_LABEL, label)},
		{pkcs11.NewAttribute(pkcs11.CKA_ID, id)},
	} {
		hs, err := m.findObjects(sh, t, 1)
		if err != nil {
			return err
		}
		if len(hs) > 0 {
			return fmt.Errorf("hsm: %w (label %q, id %x)", ErrKeyExists, label, id)
		}
	}
	return nil
}

// DestroyKey removes every object (private, public) with CKA_ID id. It is
// the undo step of a failed ceremony and the end of a key's life.
func (m *Module) DestroyKey(ctx context.Context, id []byte) error {
	if len(id) == 0 {
		return fmt.Errorf("%w: empty key id", ErrInvalidArgument)
	}
	m.createMu.Lock()
	defer m.createMu.Unlock()
	return m.do(ctx, "destroy key", func(sh pkcs11.SessionHandle, gen uint64) error {
		hs, err := m.findObjects(sh, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, id)}, 16)
		if err != nil {
			return err
		}
		if len(hs) == 0 {
			return fmt.Errorf("hsm: %w (id %x)", ErrKeyNotFound, id)
		}
		var errs []error
		for _, h := range hs {
			if err := m.p.DestroyObject(sh, h); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
}
