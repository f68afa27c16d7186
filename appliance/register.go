package appliance

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"time"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance/assertion"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
	"github.com/keyrack/keyrack/hsm"
)

// Registration of a key with the Brand Store: the appliance gives what a
// brand owner submits (the account-key-request, self-signed by the key,
// which is `snap export-key --account=ID NAME`; the public key in the
// encoding `snap export-key NAME` prints; the constraints for a scoped
// key) and takes back the account-key assertion the store issued.

// activeKey returns the record and token key of an active key.
func (a *Appliance) activeKey(ctx context.Context, name string) (store.Key, *hsm.Key, error) {
	k, err := a.keyRecord(ctx, name)
	if err != nil {
		return store.Key{}, nil, err
	}
	if k.State != store.KeyActive {
		return store.Key{}, nil, &Error{Kind: Conflict, Code: "key-state",
			Message: fmt.Sprintf("key %q is %s", name, k.State)}
	}
	hk, err := a.mod.FindKey(ctx, k.CKAID)
	if err != nil {
		return store.Key{}, nil, err
	}
	return k, hk, nil
}

// ExportKey gives what registering key name with the Brand Store for
// account takes: the account-key-request the token signs, the public key
// and the constraints of a scoped key.
func (a *Appliance) ExportKey(ctx context.Context, officer, name, account string) (wire.KeyExport, error) {
	if account == "" {
		return wire.KeyExport{}, badInput("invalid-argument", "account-id (the brand account the key is registered to) is required")
	}
	k, hk, err := a.activeKey(ctx, name)
	if err != nil {
		return wire.KeyExport{}, err
	}
	signer, err := assertion.NewSigner(hk.WithContext(ctx))
	if err != nil {
		return wire.KeyExport{}, err
	}
	akr, err := signer.AccountKeyRequest(account, name, time.Now(), nil)
	if err != nil {
		return wire.KeyExport{}, badInput("invalid-argument", err.Error())
	}
	pub, err := assertion.EncodePublicKey(hk.Info().Public)
	if err != nil {
		return wire.KeyExport{}, err
	}
	r, err := parseRoles(json.RawMessage(k.Roles))
	if err != nil {
		return wire.KeyExport{}, err
	}
	// Audited even if the officer has gone away meanwhile: the token
	// made the signature.
	err = a.db.Update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		_, err := tx.Audit("officer:"+officer, "key.export", name, "ok", map[string]any{"account-id": account, "key_id": k.KeyID})
		return err
	})
	if err != nil {
		return wire.KeyExport{}, err
	}
	return wire.KeyExport{
		KeyID:             k.KeyID,
		AccountKeyRequest: string(akr.Bytes),
		PublicKey:         string(pub), // the account-key body encoding, base64 text already
		Constraints:       r.scope.Constraints(),
		Note:              "register with the Brand Store: account-key-request as `snap export-key --account` gives it; for a scoped key, the support request carries public-key and the model constraints",
	}, nil
}

// PutAccountKey takes the Brand Store's account-key assertion for a key.
// It must be for this key's public key, and its constraints may not be
// wider than the key's local roles (which stay in force either way).
func (a *Appliance) PutAccountKey(ctx context.Context, officer, name string, body []byte) (wire.AccountKeyStored, error) {
	decoded, err := asserts.Decode(body)
	if err != nil {
		return wire.AccountKeyStored{}, badInput("bad-assertion", "not an assertion: "+err.Error())
	}
	ak, ok := decoded.(*asserts.AccountKey)
	if !ok {
		return wire.AccountKeyStored{}, badInput("bad-assertion", "expected an account-key assertion, got "+decoded.Type().Name)
	}
	k, hk, err := a.activeKey(ctx, name)
	if err != nil {
		return wire.AccountKeyStored{}, err
	}
	if ak.PublicKeyID() != k.KeyID {
		return wire.AccountKeyStored{}, badInput("wrong-key", fmt.Sprintf("the account-key is for key %s, not %q (%s)", ak.PublicKeyID(), name, k.KeyID))
	}
	if pub, err := x509.ParsePKIXPublicKey(k.PublicKey); err != nil || pub.(*rsa.PublicKey).N.Cmp(hk.Info().Public.N) != 0 {
		return wire.AccountKeyStored{}, fmt.Errorf("key %q: record and token disagree on the public key", name)
	}
	r, err := parseRoles(json.RawMessage(k.Roles))
	if err != nil {
		return wire.AccountKeyStored{}, err
	}
	if err := r.scope.CheckStoreConstraints(ak.Header("constraints")); err != nil {
		return wire.AccountKeyStored{}, badInput("constraints-too-wide", err.Error())
	}
	err = a.db.Update(ctx, func(tx *store.Tx) error {
		if err := tx.SetAccountKey(name, asserts.Encode(ak)); err != nil {
			return err
		}
		_, err := tx.Audit("officer:"+officer, "key.account-key", name, "ok",
			map[string]any{"account-id": ak.AccountID(), "key_id": k.KeyID, "constrained": ak.Header("constraints") != nil})
		return err
	})
	if err != nil {
		return wire.AccountKeyStored{}, err
	}
	return wire.AccountKeyStored{Name: name, AccountKey: true, AccountID: ak.AccountID()}, nil
}
