package appliance

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
	"github.com/keyrack/keyrack/hsm"
)

// The audit key is the appliance's own ECDSA P-256 key: generated in the
// token at first start, sign-only, never extractable. It signs the audit
// chain's checkpoints and nothing else, so a store administrator who
// rewrites the chain cannot make checkpoints that verify. Its public half
// is recorded in the chain itself (an audit-key.generate event), which is
// where verifiers learn it; officers confirm its fingerprint at setup.
const (
	auditKeyLabel   = "keyrack-audit"
	auditKeySetting = "audit_key_cka_id"
)

// ErrAuditKeyMissing: the audit key the store records for this token is
// not in it (another token, or the key destroyed). A new one is not made
// silently: verifiers would see a new key appear for no reason anyone
// could check.
var ErrAuditKeyMissing = errors.New("the audit key recorded for this token is not in it")

// auditKey is the token's audit key and its record.
type auditKey struct {
	key *hsm.Key
	rec store.AuditKey
}

// ensureAuditKey finds this token's audit key (recorded under the token's
// serial, like the import key: appliances on one store may each have
// their own token), or makes it on the first start and records it.
func ensureAuditKey(ctx context.Context, mod *hsm.Module, db *store.DB) (auditKey, error) {
	serial, err := mod.TokenSerial()
	if err != nil {
		return auditKey{}, err
	}
	setting := auditKeySetting + "/" + serial
	var idHex string
	var keys []store.AuditKey
	err = db.View(ctx, func(tx *store.Tx) error {
		var err error
		if idHex, err = tx.Setting(setting); err != nil {
			return err
		}
		keys, err = tx.AuditKeys()
		return err
	})
	if err == nil {
		id, derr := hex.DecodeString(idHex)
		if derr != nil {
			return auditKey{}, fmt.Errorf("audit key: bad CKA_ID %q in the store", idHex)
		}
		k, err := mod.FindKey(ctx, id)
		if err != nil {
			return auditKey{}, fmt.Errorf("%w (CKA_ID %s; wrong token or store?): %w", ErrAuditKeyMissing, idHex, err)
		}
		if k.Info().EC == nil {
			return auditKey{}, fmt.Errorf("audit key %s in the token is %s, not ECDSA P-256", idHex, k.Info().Type)
		}
		der, err := x509.MarshalPKIXPublicKey(k.Info().EC)
		if err != nil {
			return auditKey{}, err
		}
		fp := store.AuditKeyFingerprint(der)
		for _, r := range keys {
			if r.Fingerprint == fp {
				return auditKey{key: k, rec: r}, nil
			}
		}
		return auditKey{}, fmt.Errorf("audit key %s: its public key (SHA-256 %s) is not on record in the store", idHex, fp)
	}
	if !errors.Is(err, store.ErrNotFound) {
		return auditKey{}, err
	}
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		return auditKey{}, err
	}
	k, err := mod.GenerateECDSA(ctx, hsm.KeySpec{Label: auditKeyLabel + "-" + hex.EncodeToString(suffix), Usage: hsm.UsageSign})
	if err != nil {
		return auditKey{}, fmt.Errorf("generating the audit key: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(k.Info().EC)
	if err != nil {
		_ = mod.DestroyKey(context.WithoutCancel(ctx), k.ID())
		return auditKey{}, err
	}
	var rec store.AuditKey
	err = db.Update(ctx, func(tx *store.Tx) error {
		if err := tx.SetSetting(setting, hex.EncodeToString(k.ID())); err != nil {
			return err
		}
		var err error
		rec, err = tx.PutAuditKey(store.AuditKey{Fingerprint: store.AuditKeyFingerprint(der), PublicKey: der, TokenSerial: serial})
		return err
	})
	if err != nil {
		_ = mod.DestroyKey(context.WithoutCancel(ctx), k.ID())
		return auditKey{}, err
	}
	return auditKey{key: k, rec: rec}, nil
}

func auditKeyWire(k store.AuditKey) wire.AuditKey {
	return wire.AuditKey{
		PublicKeyPEM: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: k.PublicKey})),
		Fingerprint:  k.Fingerprint, Algorithm: store.AuditKeyAlgorithm, TokenSerial: k.TokenSerial,
		EventSeq: k.EventSeq, CreatedAt: k.Created,
	}
}

// AuditKey describes this appliance's audit key.
func (a *Appliance) AuditKey() wire.AuditKey { return auditKeyWire(a.auditKey.rec) }

// AuditKeys lists every audit key on record (one per token of the
// appliances sharing the store), oldest first.
func (a *Appliance) AuditKeys(ctx context.Context) ([]wire.AuditKey, error) {
	var keys []store.AuditKey
	if err := a.db.ViewDurable(ctx, func(tx *store.Tx) error {
		var err error
		keys, err = tx.AuditKeys()
		return err
	}); err != nil {
		return nil, err
	}
	out := make([]wire.AuditKey, len(keys))
	for i, k := range keys {
		out[i] = auditKeyWire(k)
	}
	return out, nil
}
