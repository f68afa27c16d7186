package hsm

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"
)

// ErrBadWrappedKey means the blob did not unwrap under the import key: it
// was wrapped to another appliance, truncated or corrupted. Tokens report
// this in several ways (SoftHSM: CKR_GENERAL_ERROR for a KWP blob under the
// wrong key), all of which map here.
var ErrBadWrappedKey = errors.New("wrapped key does not unwrap under this appliance's import key")

// ErrKeyTooSmall means an imported key is below the size its role needs.
var ErrKeyTooSmall = errors.New("key too small")

// KWP mechanism numbers: SoftHSM 2.6 implements RFC 5649 as 0x210A
// (CKM_AES_KEY_WRAP_PAD); PKCS#11 v3.0 tokens name it CKM_AES_KEY_WRAP_KWP
// (0x210B).
const (
	MechAESKeyWrapPad uint = 0x210A
	MechAESKeyWrapKWP uint = 0x210B
)

// ImportSpec describes a key entering the token from a wrapped blob.
type ImportSpec struct {
	Label string
	// ID is the CKA_ID; 16 random bytes when empty.
	ID []byte
	// MinBits is the least RSA size accepted (default 4096, what snap
	// signing keys need).
	MinBits int
}

// ImportMethod says how this token unwraps blobs: "CKM_RSA_AES_KEY_WRAP"
// in one call where the token has it, else two calls (OAEP, then KWP).
func (m *Module) ImportMethod() string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.mechs[pkcs11.CKM_RSA_AES_KEY_WRAP] {
		return "CKM_RSA_AES_KEY_WRAP"
	}
	if err := m.canImportLocked(); err != nil {
		return "none (" + err.Error() + ")"
	}
	return fmt.Sprintf("CKM_RSA_PKCS_OAEP(SHA-1)+0x%X", m.cfg.KWPMechanism)
}

// ErrNoUnwrapMechanism means the token, as this process reaches it, lists
// neither CKM_RSA_AES_KEY_WRAP nor both mechanisms of the two-call import.
// p11-kit's RPC (0.24, Debian 12) is one such path: it forwards only the
// mechanisms whose parameters it knows how to carry, and drops every AES
// key wrap, so keys can be generated but not imported through it.
var ErrNoUnwrapMechanism = fmt.Errorf("%w: the token offers no mechanism to unwrap an imported key", ErrUnsupported)

// CanImport says whether ImportWrapped can work on this token as far as
// its mechanism list tells (nil), or why not (ErrNoUnwrapMechanism): the
// appliance refuses an import proposal before officers approve it.
func (m *Module) CanImport() error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.canImportLocked()
}

// canImportLocked refuses an import the token's mechanism list already
// rules out, before anything is made in the token. A token that gave no
// list (GetMechanismList failed) is tried anyway. Callers hold mu.
func (m *Module) canImportLocked() error {
	if len(m.mechs) == 0 || m.mechs[pkcs11.CKM_RSA_AES_KEY_WRAP] {
		return nil
	}
	var missing []string
	if !m.mechs[pkcs11.CKM_RSA_PKCS_OAEP] {
		missing = append(missing, "CKM_RSA_PKCS_OAEP")
	}
	if !m.mechs[m.cfg.KWPMechanism] {
		missing = append(missing, fmt.Sprintf("0x%X (token.kwp_mechanism)", m.cfg.KWPMechanism))
	}
	if len(missing) > 0 {
		return fmt.Errorf("hsm: %w (not listed: %s)", ErrNoUnwrapMechanism, strings.Join(missing, ", "))
	}
	return nil
}

// ImportWrapped unwraps blob (see package keywrap for its layout) with the
// import key into a token private key that is sensitive, never
// extractable and sign-only, and creates its public-key object. The
// ephemeral AES key never leaves the token and is destroyed. On any
// failure nothing new is left in the token.
func (m *Module) ImportWrapped(ctx context.Context, importKey *Key, blob []byte, spec ImportSpec) (*Key, error) {
	if importKey == nil || importKey.info.Public == nil {
		return nil, fmt.Errorf("%w: import key must be an RSA key", ErrInvalidArgument)
	}
	if !importKey.info.Unwrap {
		return nil, fmt.Errorf("%w: key %q may not unwrap", ErrInvalidArgument, importKey.info.Label)
	}
	if spec.Label == "" {
		return nil, fmt.Errorf("%w: a key label is required", ErrInvalidArgument)
	}
	if spec.MinBits == 0 {
		spec.MinBits = 4096
	}
	if err := m.CanImport(); err != nil {
		return nil, err
	}
	head := importKey.info.Public.Size()
	if len(blob) < head+24 || (len(blob)-head)%8 != 0 || len(blob) > 64<<10 {
		return nil, fmt.Errorf("hsm: %w (blob of %d bytes cannot hold an RSA-%d wrapped key)", ErrBadWrappedKey, len(blob), importKey.info.Bits)
	}
	var k *Key
	retire := false
	err := m.create(ctx, "import key", spec.Label, &spec.ID, &retire, func(sh pkcs11.SessionHandle, gen uint64) error {
		ih, err := importKey.handleFor(sh, gen)
		if err != nil {
			return err
		}
		priv, err := m.unwrap(sh, ih, head, blob, privateKeyTemplate(UsageSign, spec.Label, spec.ID))
		if err != nil {
			// SoftHSM 2.6 leaves the half-made object behind when it
			// refuses an unwrap template. Token objects carry our fresh
			// CKA_ID, so remove those; session objects die with the
			// session, which we retire.
			m.destroyByID(sh, spec.ID)
			retire = true
			return err
		}
		ki, err := m.readInfo(sh, priv)
		if err == nil {
			err = checkImported(ki, spec.MinBits)
		}
		if err != nil {
			_ = m.p.DestroyObject(sh, priv)
			return err
		}
		// The matching public-key object, so that the token holds a
		// complete pair (some tools, crypto11 among them, find keys only
		// as pairs).
		pubT := publicKeyTemplate(UsageSign, spec.Label, spec.ID,
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS, ki.Public.N.Bytes()),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, bigEndian(ki.Public.E)))
		if _, err := m.p.CreateObject(sh, pubT); err != nil {
			_ = m.p.DestroyObject(sh, priv)
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

// destroyByID removes every object with CKA_ID id, ignoring errors: it is
// cleanup after a failure that is already being reported.
func (m *Module) destroyByID(sh pkcs11.SessionHandle, id []byte) {
	hs, err := m.findObjects(sh, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, id)}, 16)
	if err != nil {
		return
	}
	for _, h := range hs {
		_ = m.p.DestroyObject(sh, h)
	}
}

func checkImported(ki KeyInfo, minBits int) error {
	if ki.Type != "RSA" {
		return fmt.Errorf("hsm: %w: imported key is %s, keyrack signs with RSA", ErrUnsupported, ki.Type)
	}
	if ki.Bits < minBits {
		return fmt.Errorf("hsm: %w: RSA-%d, at least %d bits needed", ErrKeyTooSmall, ki.Bits, minBits)
	}
	if !ki.Sensitive || ki.Extractable || !ki.Sign || ki.Decrypt || ki.Unwrap {
		return fmt.Errorf("hsm: token did not apply the key template (sensitive=%v extractable=%v sign=%v decrypt=%v unwrap=%v)",
			ki.Sensitive, ki.Extractable, ki.Sign, ki.Decrypt, ki.Unwrap)
	}
	return nil
}

// unwrap runs the one-call or two-call unwrap and returns the new private
// key handle. Unwrap failures become ErrBadWrappedKey (not a raw CKR) so
// that Module.do does not mistake a bad blob for a lost token.
func (m *Module) unwrap(sh pkcs11.SessionHandle, importH pkcs11.ObjectHandle, head int, blob []byte, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	oaep := pkcs11.NewOAEPParams(pkcs11.CKM_SHA_1, pkcs11.CKG_MGF1_SHA1, pkcs11.CKZ_DATA_SPECIFIED, nil)
	if m.mechs[pkcs11.CKM_RSA_AES_KEY_WRAP] {
		mech := pkcs11.NewMechanism(pkcs11.CKM_RSA_AES_KEY_WRAP, &pkcs11.RSAAESKeyWrapParams{AESKeyBits: 256, OAEPParams: *oaep})
		h, err := m.p.UnwrapKey(sh, []*pkcs11.Mechanism{mech}, importH, blob, tmpl)
		return h, badBlob(err)
	}
	aes, err := m.p.UnwrapKey(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_OAEP, oaep)}, importH, blob[:head], []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		// No CKA_VALUE_LEN: the unwrapped data fixes it, and SoftHSM
		// answers CKR_ATTRIBUTE_READ_ONLY when it is given.
	})
	if err != nil {
		return 0, badBlob(err)
	}
	// The ephemeral key is a session object; destroy it now rather than
	// leave it until the session closes.
	defer func() { _ = m.p.DestroyObject(sh, aes) }()
	h, err := m.p.UnwrapKey(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(m.cfg.KWPMechanism, nil)}, aes, blob[head:], tmpl)
	return h, badBlob(err)
}

// badBlob maps the codes tokens give for an undecryptable blob. Codes that
// mean the token or session is gone pass through for recovery, except
// CKR_GENERAL_ERROR, which SoftHSM returns for a KWP integrity failure.
func badBlob(err error) error {
	if err == nil {
		return nil
	}
	code, ok := ckr(err)
	if !ok {
		return err
	}
	switch code {
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_USER_NOT_LOGGED_IN,
		pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED,
		pkcs11.CKR_OBJECT_HANDLE_INVALID, pkcs11.CKR_KEY_HANDLE_INVALID, pkcs11.CKR_UNWRAPPING_KEY_HANDLE_INVALID:
		return err
	case pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_MECHANISM_PARAM_INVALID:
		return fmt.Errorf("hsm: %w: the token refused the unwrap mechanism (%v); check token.kwp_mechanism", ErrUnsupported, pkcs11.Error(code))
	}
	return fmt.Errorf("hsm: %w (%v)", ErrBadWrappedKey, pkcs11.Error(code))
}

func bigEndian(e int) []byte {
	var b []byte
	for ; e > 0; e >>= 8 {
		b = append([]byte{byte(e)}, b...)
	}
	return b
}
