package appliance

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/hsm"
)

// The import key is the appliance's own RSA-3072 key-encryption key:
// generated in the token at first start, unwrap-only, never extractable.
// Officers wrap brand keys to its public half; only this token can unwrap.
const (
	importKeyLabel   = "keyrack-import"
	importKeySetting = "import_key_cka_id"
	importKeyBits    = 3072
	// ImportMethod names the wrapping the appliance accepts, in the cloud
	// KMS vocabulary: RSA-OAEP(SHA-1) of an AES-256 key || AES-KWP(PKCS#8).
	ImportMethod = "RSA_OAEP_3072_SHA1_AES_256"
)

// ensureImportKey finds this token's import key recorded in the store, or
// makes it on the first start. Each token has its own (appliances sharing
// a store may have separate tokens), recorded under the token's serial. A
// recorded import key missing from the token is an error, not a reason to
// make a new one silently: blobs wrapped for the old key would then fail
// for a reason nobody could see.
func ensureImportKey(ctx context.Context, mod *hsm.Module, db *store.DB) (*hsm.Key, error) {
	serial, err := mod.TokenSerial()
	if err != nil {
		return nil, err
	}
	setting := importKeySetting + "/" + serial
	var idHex string
	err = db.View(ctx, func(tx *store.Tx) error {
		var err error
		idHex, err = tx.Setting(setting)
		return err
	})
	if err == nil {
		id, derr := hex.DecodeString(idHex)
		if derr != nil {
			return nil, fmt.Errorf("import key: bad CKA_ID %q in the store", idHex)
		}
		k, err := mod.FindKey(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("import key %s recorded in the store is not in the token (wrong token or store?): %w", idHex, err)
		}
		return k, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	// The label carries a random part: a token may be shared by several
	// stores (tests, a re-installed appliance), and labels must not clash.
	suffix := make([]byte, 4)
	rand.Read(suffix)
	k, err := mod.GenerateRSA(ctx, hsm.KeySpec{Label: importKeyLabel + "-" + hex.EncodeToString(suffix), Bits: importKeyBits, Usage: hsm.UsageUnwrap})
	if err != nil {
		return nil, fmt.Errorf("generating the import key: %w", err)
	}
	err = db.Update(ctx, func(tx *store.Tx) error {
		if err := tx.SetSetting(setting, hex.EncodeToString(k.ID())); err != nil {
			return err
		}
		_, err := tx.Audit("system", "import-key.generate", importKeyLabel, "ok",
			map[string]any{"fingerprint": importKeyFingerprint(k.Info().Public), "bits": importKeyBits, "token_serial": serial})
		return err
	})
	if err != nil {
		_ = mod.DestroyKey(context.WithoutCancel(ctx), k.ID())
		return nil, err
	}
	return k, nil
}

// importKeyFingerprint is SHA-256 of the public key's PKIX DER, in hex:
// what an officer compares before wrapping.
func importKeyFingerprint(pub *rsa.PublicKey) string {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

func importKeyPEM(pub *rsa.PublicKey) string {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}
