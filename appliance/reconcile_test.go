package appliance

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/hsm"
)

// TestReconcileInterruptedCeremony plays a crash between the token step
// and the record's completion: at the next start the half-made key is
// removed and the record marked failed.
func TestReconcileInterruptedCeremony(t *testing.T) {
	e := newCoreEnv(t)
	ctx := context.Background()
	ckaID := []byte("interrupted-0001")
	err := e.db.Update(ctx, func(tx *store.Tx) error {
		if err := tx.InsertProposal(store.Proposal{ID: "p-int", Kind: KindKeyGenerate, Payload: "{}", Summary: "s", Proposer: "alice", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
			return err
		}
		return tx.InsertKey(store.Key{Name: "int-key", CKAID: ckaID, Origin: "generated", Roles: "[]", State: store.KeyPending, ProposalID: "p-int"})
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testMod.GenerateRSA(ctx, hsm.KeySpec{Label: "int-key", ID: ckaID, Bits: 2048}); err != nil {
		t.Fatal(err)
	}
	// The periodic repair leaves young pending work alone: it may be a
	// ceremony in progress (here or on another appliance).
	if err := e.app.reconcile(ctx, staleAfter); err != nil {
		t.Fatal(err)
	}
	if _, err := testMod.FindKey(ctx, ckaID); err != nil {
		t.Fatal("young pending work was undone")
	}
	// "Restart" on the embedded store: everything pending is undone.
	if _, err := New(ctx, e.app.cfg, testMod, e.db, e.app.log); err != nil {
		t.Fatal(err)
	}
	if _, err := testMod.FindKey(ctx, ckaID); err == nil {
		t.Fatal("the interrupted key's token object survived")
	}
	if k, err := e.app.GetKey(ctx, "int-key"); err != nil || k.State != string(store.KeyFailed) {
		t.Fatalf("record state %s (%v)", k.State, err)
	}
	evs, err := e.app.AuditEvents(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, ev := range evs {
		actions = append(actions, ev.Actor+" "+ev.Action+" "+ev.Result)
	}
	if !strings.Contains(strings.Join(actions, "\n"), "system key.reconcile") {
		t.Fatal("no audit event for the repair")
	}
}

// TestReconcileExpiredLease: a proposal whose execution was interrupted
// (its lease ran out) is failed by the janitor; one still under its lease
// is left to the appliance carrying it out.
func TestReconcileExpiredLease(t *testing.T) {
	e := newCoreEnv(t)
	ctx := context.Background()
	for id, lease := range map[string]time.Duration{"p-stale": -time.Minute, "p-live": time.Hour} {
		err := e.db.Update(ctx, func(tx *store.Tx) error {
			if err := tx.InsertProposal(store.Proposal{ID: id, Kind: KindClientRevoke, Payload: `{"name":"x"}`, Summary: "s", Proposer: "alice", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
				return err
			}
			return tx.BeginExecution(id, time.Now().Add(lease))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := e.app.reconcile(ctx, staleAfter); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{"p-stale": "failed", "p-live": "executing"} {
		if p, err := e.app.GetProposal(ctx, id); err != nil || p.State != want {
			t.Errorf("%s: %s (%v), want %s", id, p.State, err, want)
		}
	}
}
