package appliance

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
	"github.com/keyrack/keyrack/hsm"
)

// KindKeyReplicate puts an existing key into this appliance's token, for
// appliances that share a store but not a token: the brand wraps the same
// key once per appliance import key, and each appliance imports its blob
// under the key record's CKA_ID. Only keys that exist outside a token can
// be replicated; a key generated inside a token never leaves it.
const KindKeyReplicate = "key.replicate"

type replicatePayload struct {
	Name string `json:"name"`
	Blob []byte `json:"blob"`
	// TokenSerial is the token this proposal is for: it can only be
	// carried out by the appliance that holds that token.
	TokenSerial string `json:"token-serial"`
}

var errReplicaMismatch = &Error{Kind: BadInput, Code: "wrong-key",
	Message: "the wrapped key is not the key this record names (its public key differs)"}

// ProposeReplicate proposes putting key name, wrapped to this
// appliance's import key, into this appliance's token.
func (a *Appliance) ProposeReplicate(ctx context.Context, officer, name string, req wire.ReplicateRequest) (out Outcome, err error) {
	defer a.auditRefusal(ctx, officer, "proposal.create", KindKeyReplicate, &err)
	if len(req.Blob) == 0 {
		return Outcome{}, badInput("invalid-argument", "blob (the key wrapped to this appliance's import key, base64) is required")
	}
	rec, err := a.keyRecord(ctx, name)
	if err != nil {
		return Outcome{}, err
	}
	if _, err := a.mod.FindKey(ctx, rec.CKAID); err == nil {
		return Outcome{}, &Error{Kind: Conflict, Code: "key-present", Message: fmt.Sprintf("this appliance's token already holds key %q", name)}
	} else if !errors.Is(err, hsm.ErrKeyNotFound) {
		return Outcome{}, err
	}
	serial, err := a.mod.TokenSerial()
	if err != nil {
		return Outcome{}, err
	}
	sum := sha256.Sum256(req.Blob)
	return a.propose(ctx, officer, KindKeyReplicate,
		fmt.Sprintf("put key %q into the token %s of this appliance (blob sha256 %s)", name, serial, hex.EncodeToString(sum[:8])),
		replicatePayload{Name: name, Blob: req.Blob, TokenSerial: serial})
}

func (a *Appliance) precheckReplicate(tx *store.Tx, raw []byte) error {
	var p replicatePayload
	if err := json.Unmarshal(raw, &p); err != nil {
		return err
	}
	k, err := tx.GetKey(p.Name)
	if err != nil {
		return err
	}
	if k.State != store.KeyActive && k.State != store.KeyDisabled {
		return &Error{Kind: Conflict, Code: "key-state", Message: fmt.Sprintf("key %q is %s", p.Name, k.State)}
	}
	return nil
}

// executeReplicate unwraps the blob into this token under the record's
// CKA_ID and keeps it only if it is the recorded key.
func (a *Appliance) executeReplicate(ctx context.Context, p store.Proposal, actor string) error {
	var rp replicatePayload
	if err := json.Unmarshal([]byte(p.Payload), &rp); err != nil {
		return err
	}
	serial, err := a.mod.TokenSerial()
	if err != nil {
		return err
	}
	if serial != rp.TokenSerial {
		return &Error{Kind: Conflict, Code: "wrong-appliance",
			Message: fmt.Sprintf("this proposal is for the appliance with token %s; approve it there", rp.TokenSerial)}
	}
	var rec store.Key
	if err := a.db.View(ctx, func(tx *store.Tx) error {
		if err := a.checkQuorum(tx, p.ID); err != nil {
			return err
		}
		var err error
		rec, err = tx.GetKey(rp.Name)
		return err
	}); err != nil {
		return err
	}
	ctx = context.WithoutCancel(ctx)
	k, err := a.mod.ImportWrapped(ctx, a.importKey, rp.Blob, hsm.ImportSpec{Label: rp.Name, ID: rec.CKAID, MinBits: 4096})
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKIXPublicKey(k.Info().Public)
	if err != nil || !bytes.Equal(der, rec.PublicKey) {
		if derr := a.mod.DestroyKey(ctx, rec.CKAID); derr != nil {
			a.log.Error("removing a replica that is not the recorded key", "key", rp.Name, "err", derr)
		}
		return errReplicaMismatch
	}
	return a.db.Update(ctx, func(tx *store.Tx) error {
		if err := tx.DecideProposal(p.ID, store.ProposalExecuted, "key "+rp.Name+" replicated to token "+serial); err != nil {
			return err
		}
		_, err := tx.Audit(actor, KindKeyReplicate, rp.Name, "ok", map[string]any{"proposal": p.ID, "key_id": rec.KeyID, "token_serial": serial})
		return err
	})
}
