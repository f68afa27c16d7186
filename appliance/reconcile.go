package appliance

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/hsm"
)

// reconcile repairs what a crash in the middle of a ceremony left: a
// pending key record means the token step may or may not have happened, so
// any object with its CKA_ID is destroyed and the record and its proposal
// are marked failed (officers propose again; nothing is half-imported).
// Proposals that reached their quorum but were never carried out are
// marked failed likewise. Keys whose token object vanished are reported.
//
// Only what has been pending for longer than staleAfter is touched: with
// several appliances on one store (and maybe one token), a younger pending
// record may be another appliance's ceremony or signature in progress.
func (a *Appliance) reconcile(ctx context.Context, staleAfter time.Duration) error {
	cutoff := time.Now().Add(-staleAfter)
	var keys []store.Key
	var props []store.Proposal
	err := a.db.View(ctx, func(tx *store.Tx) error {
		var err error
		if keys, err = tx.ListKeys(); err != nil {
			return err
		}
		props, err = tx.ListProposals(store.ProposalPending, 1000)
		return err
	})
	if err != nil {
		return err
	}
	for _, k := range keys {
		switch k.State {
		case store.KeyPending:
			if k.UpdatedAt.After(cutoff) {
				continue
			}
			if err := a.mod.DestroyKey(ctx, k.CKAID); err != nil && !errors.Is(err, hsm.ErrKeyNotFound) {
				return fmt.Errorf("reconcile: removing the half-made token object of key %q: %w", k.Name, err)
			}
			err := a.db.Update(ctx, func(tx *store.Tx) error {
				if err := tx.SetKeyState(k.Name, store.KeyPending, store.KeyFailed); err != nil {
					return err
				}
				if err := tx.DecideProposal(k.ProposalID, store.ProposalFailed, "interrupted by a restart; propose again"); err != nil && !errors.Is(err, store.ErrConflict) {
					return err
				}
				_, err := tx.Audit("system", "key.reconcile", k.Name, "failed: interrupted ceremony undone", map[string]any{"proposal": k.ProposalID})
				return err
			})
			if err != nil {
				return err
			}
			a.log.Warn("undid a key ceremony interrupted by a restart", "key", k.Name, "proposal", k.ProposalID)
		case store.KeyActive, store.KeyDisabled:
			if _, err := a.mod.FindKey(ctx, k.CKAID); errors.Is(err, hsm.ErrKeyNotFound) {
				a.log.Error("key record without its token object: it cannot sign", "key", k.Name, "key_id", k.KeyID)
			} else if err != nil {
				return err
			}
		}
	}
	// Serials reserved but never issued: the signature, if one was made,
	// was never recorded, so it was never sent. Undo the reservation.
	err = a.db.Update(ctx, func(tx *store.Tx) error {
		stale, err := tx.StaleReservations(cutoff)
		if err != nil {
			return err
		}
		for _, r := range stale {
			if err := tx.DropSerialReservation(r.Brand, r.Model, r.Serial, r.Nonce); err != nil {
				return err
			}
			if _, err := tx.Audit("system", "serial.reconcile", r.Brand+"/"+r.Model+"/"+r.Serial, "reservation undone after a restart", nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, p := range props {
		if len(p.Approvals) < a.cfg.Officers.Quorum || p.CreatedAt.After(cutoff) {
			continue
		}
		err := a.db.Update(ctx, func(tx *store.Tx) error {
			if err := tx.DecideProposal(p.ID, store.ProposalFailed, "interrupted by a restart; propose again"); err != nil {
				return err
			}
			_, err := tx.Audit("system", "proposal.reconcile", p.Kind+" "+p.ID, "failed: interrupted", nil)
			return err
		})
		if err != nil && !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	return nil
}

// ErrOfficersExist refuses a bootstrap on an appliance that has officers.
var ErrOfficersExist = errors.New("the appliance already has officers: add more through an officer.add ceremony")

// BootstrapOfficers creates the first officers of an appliance that has
// none, and returns their credentials (shown once, stored as hashes).
func BootstrapOfficers(ctx context.Context, db *store.DB, names []string) (map[string]string, error) {
	creds := map[string]string{}
	err := db.Update(ctx, func(tx *store.Tx) error {
		n, err := tx.CountActiveOfficers()
		if err != nil {
			return err
		}
		if n > 0 {
			return ErrOfficersExist
		}
		for _, name := range names {
			if err := validName("officer", name); err != nil {
				return err
			}
			tok, hash, err := newCredential(officerPrefix, name)
			if err != nil {
				return err
			}
			if _, err := tx.InsertOfficer(name, hash); err != nil {
				return err
			}
			if _, err := tx.Audit("system", "officer.bootstrap", name, "ok", nil); err != nil {
				return err
			}
			creds[name] = tok
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return creds, nil
}
