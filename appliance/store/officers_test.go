package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestOfficerSessionsAndChallenges(t *testing.T) { backends(t, testOfficerSessionsAndChallenges) }

// testOfficerSessionsAndChallenges: a challenge is taken once; sessions are
// found by their hash, end with their officer, and expired ones and
// challenges are purged.
func testOfficerSessionsAndChallenges(t *testing.T, db *DB) {
	ctx := context.Background()
	now := time.Now()
	err := db.Update(ctx, func(tx *Tx) error {
		if _, err := tx.InsertOfficer("alice", "ssh-ed25519 AAAA", "cert"); err != nil {
			return err
		}
		if err := tx.InsertChallenge("c1", "alice", "xyz", now.Add(time.Minute)); err != nil {
			return err
		}
		if err := tx.InsertChallenge("c2", "alice", "old", now.Add(-time.Minute)); err != nil {
			return err
		}
		if err := tx.InsertSession([]byte("h1"), Session{Officer: "alice", CertSHA256: "cert", Expires: now.Add(time.Minute)}); err != nil {
			return err
		}
		return tx.InsertSession([]byte("h2"), Session{Officer: "alice", Expires: now.Add(-time.Minute)})
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(ctx, func(tx *Tx) error {
		o, ch, exp, err := tx.TakeChallenge("c1")
		if err != nil || o != "alice" || ch != "xyz" || exp.Before(now) {
			t.Errorf("challenge: %q %q %v %v", o, ch, exp, err)
		}
		if _, _, _, err := tx.TakeChallenge("c1"); !errors.Is(err, ErrNotFound) {
			t.Errorf("a challenge taken twice: %v", err)
		}
		if n, err := tx.CountChallenges(); err != nil || n != 1 {
			t.Errorf("%d challenges outstanding (%v), want 1", n, err)
		}
		s, err := tx.GetSession([]byte("h1"))
		if err != nil || s.Officer != "alice" || s.CertSHA256 != "cert" {
			t.Errorf("session %+v %v", s, err)
		}
		return tx.PurgeLogins(now)
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Update(ctx, func(tx *Tx) error {
		if n, _ := tx.CountChallenges(); n != 0 {
			t.Errorf("expired challenge not purged")
		}
		if _, err := tx.GetSession([]byte("h2")); !errors.Is(err, ErrNotFound) {
			t.Errorf("expired session not purged: %v", err)
		}
		if err := tx.EndSessions("alice"); err != nil {
			return err
		}
		if _, err := tx.GetSession([]byte("h1")); !errors.Is(err, ErrNotFound) {
			t.Errorf("session of an officer whose sessions ended: %v", err)
		}
		return nil
	})
}

func TestVoidApprovals(t *testing.T) { backends(t, testVoidApprovals) }

// testVoidApprovals: a removed officer's approvals of pending proposals
// go (their own pending proposals included, which are then cancelled);
// decided proposals keep theirs. The audit chain keeps every approval
// event either way.
func testVoidApprovals(t *testing.T, db *DB) {
	ctx := context.Background()
	err := db.Update(ctx, func(tx *Tx) error {
		for _, p := range []Proposal{
			{ID: "by-alice", Kind: "k", Payload: "{}", Summary: "s", Proposer: "alice", ExpiresAt: time.Now().Add(time.Hour)},
			{ID: "by-bob", Kind: "k", Payload: "{}", Summary: "s", Proposer: "bob", ExpiresAt: time.Now().Add(time.Hour)},
			{ID: "done", Kind: "k", Payload: "{}", Summary: "s", Proposer: "alice", ExpiresAt: time.Now().Add(time.Hour)},
		} {
			if err := tx.InsertProposal(p); err != nil {
				return err
			}
			if err := tx.AddApproval(p.ID, "alice", []byte("sig")); err != nil {
				return err
			}
		}
		return tx.DecideProposal("done", ProposalExecuted, "ok")
	})
	if err != nil {
		t.Fatal(err)
	}
	var cancelled []string
	err = db.Update(ctx, func(tx *Tx) error {
		var err error
		cancelled, err = tx.VoidApprovals("alice", "proposer removed")
		return err
	})
	if err != nil || len(cancelled) != 1 || cancelled[0] != "by-alice" {
		t.Fatalf("cancelled %v (%v)", cancelled, err)
	}
	db.View(ctx, func(tx *Tx) error {
		for id, want := range map[string]struct {
			state     ProposalState
			approvals int
		}{"by-alice": {ProposalCancelled, 0}, "by-bob": {ProposalPending, 0}, "done": {ProposalExecuted, 1}} {
			p, err := tx.GetProposal(id)
			if err != nil || p.State != want.state || len(p.Approvals) != want.approvals {
				t.Errorf("%s: %s with %d approvals (%v), want %s with %d", id, p.State, len(p.Approvals), err, want.state, want.approvals)
			}
		}
		return nil
	})
}
