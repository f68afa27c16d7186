package appliance

import (
	"context"
	"fmt"

	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
)

// Restrictive at once, permissive by quorum: any one officer may stop a
// key from signing or a client from asking (an emergency cannot wait for
// a second officer), and only the quorum may undo it (key.enable; a
// revoked client stays revoked: the quorum creates a new one).

// FreezeKey stops key name from signing, at once, on the word of one
// officer. The key stays in the token; a key.enable proposal brings it
// back.
func (a *Appliance) FreezeKey(ctx context.Context, officer, name string) (wire.Key, error) {
	var k store.Key
	err := a.db.Update(ctx, func(tx *store.Tx) error {
		var err error
		if k, err = tx.GetKey(name); err != nil {
			return err
		}
		if k.State != store.KeyActive {
			return conflict("key-state", fmt.Sprintf("key %q is %s, not active", name, k.State))
		}
		if err := tx.SetKeyState(name, store.KeyActive, store.KeyDisabled); err != nil {
			return err
		}
		k.State = store.KeyDisabled
		_, err = tx.Audit("officer:"+officer, "key.freeze", name, "ok", map[string]any{"key_id": k.KeyID})
		return err
	})
	if err != nil {
		a.auditRefusal(ctx, officer, "key.freeze", name, &err)
		return wire.Key{}, err
	}
	return a.keyView(ctx, k, false), nil
}

// RevokeClient revokes API client name at once, on the word of one
// officer: its key is refused from the next request on, and a signature in
// progress for it is discarded (logAndAudit).
func (a *Appliance) RevokeClient(ctx context.Context, officer, name string) (wire.Client, error) {
	var c store.Client
	err := a.db.Update(ctx, func(tx *store.Tx) error {
		var err error
		if c, err = tx.GetClientByName(name); err != nil {
			return err
		}
		if c.RevokedAt != nil {
			return conflict("client-revoked", fmt.Sprintf("API client %q is already revoked", name))
		}
		if err := tx.RevokeClient(name); err != nil {
			return err
		}
		now := tx.Now()
		c.RevokedAt = &now
		_, err = tx.Audit("officer:"+officer, "client.revoke", name, "ok", map[string]any{"immediate": true})
		return err
	})
	if err != nil {
		a.auditRefusal(ctx, officer, "client.revoke", name, &err)
		return wire.Client{}, err
	}
	return clientView(c), nil
}
