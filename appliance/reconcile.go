package appliance

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keyrack/keyrack/appliance/officerkey"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/hsm"
)

// reconcile repairs what a crash in the middle of a ceremony left: a
// pending key record means the token step may or may not have happened, so
// any object with its CKA_ID is destroyed and the record and its proposal
// are marked failed (officers propose again; nothing is half-imported).
// Proposals whose execution was interrupted (their lease ran out) are
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
		props, err = tx.ListProposals(store.ProposalExecuting, 1000)
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
	// Proposals whose execution was interrupted: their lease has run out
	// (or, at the start of an embedded store, every one).
	for _, p := range props {
		if p.LeaseEnd == nil || staleAfter > 0 && p.LeaseEnd.After(time.Now()) {
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
var ErrOfficersExist = errors.New("the appliance already has officers with keys: add more through an officer.add ceremony")

// OfficerKey names an officer and the public key they made
// (authorized_keys form).
type OfficerKey struct {
	Name      string
	PublicKey string
	// CertSHA256 binds the officer's TLS client certificate (SHA-256 of
	// its DER, hex), or is "".
	CertSHA256 string
}

// BootstrapOfficers enrols the first officers of an appliance, each with
// the public key they made: nothing secret is made or shown. It is refused
// once any officer has a key. Officers recorded before officers had keys
// (who can do nothing) get the key given for their name.
func BootstrapOfficers(ctx context.Context, db *store.DB, officers []OfficerKey) error {
	return db.Update(ctx, func(tx *store.Tx) error {
		n, err := tx.CountActiveOfficers()
		if err != nil {
			return err
		}
		if n > 0 {
			return ErrOfficersExist
		}
		for _, ok := range officers {
			if err := validName("officer", ok.Name); err != nil {
				return err
			}
			pub, err := parseOfficerKey(ok.PublicKey)
			if err != nil {
				return fmt.Errorf("officer %s: %w", ok.Name, err)
			}
			if err := checkKeyUnused(tx, pub, ok.Name); err != nil {
				return err
			}
			if err := validCertSHA256(ok.CertSHA256); err != nil {
				return err
			}
			line := officerkey.Authorized(pub)
			o, err := tx.GetOfficerByName(ok.Name)
			switch {
			case errors.Is(err, store.ErrNotFound):
				_, err = tx.InsertOfficer(ok.Name, line, ok.CertSHA256)
			case err == nil && o.RevokedAt == nil:
				err = tx.SetOfficerKey(ok.Name, line, ok.CertSHA256)
			case err == nil:
				err = conflict("officer-revoked", fmt.Sprintf("officer %q was removed", ok.Name))
			}
			if err != nil {
				return err
			}
			if _, err := tx.Audit("system", "officer.bootstrap", ok.Name, "ok",
				map[string]any{"public_key": line, "fingerprint": officerkey.Fingerprint(pub), "client_cert_sha256": ok.CertSHA256}); err != nil {
				return err
			}
		}
		return nil
	})
}
