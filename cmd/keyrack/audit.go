package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"

	"github.com/keyrack/keyrack/appliance/auditverify"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
)

// auditVerify walks the audit hash chain, from the store file (-db) or
// through the API, and re-verifies every officer's approval the chain
// records against the officer's key as the chain recorded it. From the
// store file it also checks every proposal on record against the chain.
// It names the first broken event or proposal.
func (c *cli) auditVerify(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	dbPath := fs.String("db", "", "verify the store file directly (read-only) instead of asking the appliance; also checks the approvals on record")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		return usageErr("audit verify [-db PATH]")
	}
	w := newChainWalk()
	var props []store.Proposal
	var err error
	if *dbPath != "" {
		var db *store.DB
		if db, err = store.OpenSQLiteReadOnly(ctx, *dbPath); err != nil {
			return err
		}
		defer db.Close()
		if err = w.fromStore(ctx, db); err == nil {
			err = db.View(ctx, func(tx *store.Tx) error {
				var err error
				props, err = tx.ListProposals("", 1000)
				return err
			})
		}
	} else {
		err = c.verifyOverAPI(ctx, w)
	}
	var ce *store.ChainError
	if errors.As(err, &ce) {
		// Events before the broken one verify: for a hash-chain break the
		// chain's count stopped there; an approval is checked after its
		// batch's hashes, so everything before its event verified.
		before := w.chain.Count
		if !w.chainBroke {
			before = ce.Seq - 1
		}
		fmt.Fprintf(c.stdout, "BROKEN at event %d: %s (%d events before it verify)\n", ce.Seq, ce.Reason, before)
		return fmt.Errorf("audit chain broken at event %d", ce.Seq)
	}
	if err != nil {
		return err
	}
	for _, p := range props {
		if err := w.approvals.CheckRecord(p); err != nil {
			var re *auditverify.RecordError
			if !errors.As(err, &re) {
				return err
			}
			fmt.Fprintf(c.stdout, "BROKEN: proposal %s: %s\n", re.Proposal, re.Reason)
			return fmt.Errorf("proposal %s on record disagrees with the audit chain", re.Proposal)
		}
	}
	fmt.Fprintf(c.stdout, "audit chain OK: %d events, %d approvals verified\n", w.chain.Count, w.approvals.Verified)
	if *dbPath != "" {
		fmt.Fprintf(c.stdout, "proposals on record: %d checked against the chain\n", len(props))
		if len(props) == 1000 {
			fmt.Fprintln(c.stdout, "note: the store lists at most 1000 proposals at once: only the newest 1000 were checked")
		}
	}
	return nil
}

// chainWalk runs both checks over the chain, one batch at a time and in
// order: the hash chain first, then the approvals its events record.
type chainWalk struct {
	chain      *store.AuditVerifier
	approvals  *auditverify.Approvals
	chainBroke bool // the break is the hash chain's, not an approval's
}

func newChainWalk() *chainWalk {
	return &chainWalk{chain: store.NewAuditVerifier(), approvals: auditverify.New()}
}

func (w *chainWalk) check(batch []store.AuditEvent) error {
	if err := w.chain.Check(batch); err != nil {
		w.chainBroke = true
		return err
	}
	return w.approvals.Check(batch)
}

// fromStore walks the chain in the store file.
func (w *chainWalk) fromStore(ctx context.Context, db *store.DB) error {
	var after int64
	for {
		var batch []store.AuditEvent
		err := db.View(ctx, func(tx *store.Tx) error {
			var err error
			batch, err = tx.AuditEvents(after, 1000)
			return err
		})
		if err != nil {
			return err
		}
		if len(batch) == 0 {
			return nil
		}
		if err := w.check(batch); err != nil {
			return err
		}
		after = batch[len(batch)-1].Seq
	}
}

// verifyOverAPI walks the chain as the appliance gives it.
func (c *cli) verifyOverAPI(ctx context.Context, w *chainWalk) error {
	var after int64
	for {
		var ans wire.AuditPage
		if _, err := c.call(ctx, "GET", fmt.Sprintf("/v1/audit?after=%d&limit=1000", after), nil, &ans, true); err != nil {
			return err
		}
		if len(ans.Events) == 0 {
			return nil
		}
		batch := make([]store.AuditEvent, len(ans.Events))
		for i, e := range ans.Events {
			prev, err1 := hex.DecodeString(e.PrevHash)
			hash, err2 := hex.DecodeString(e.Hash)
			if err1 != nil || err2 != nil {
				return fmt.Errorf("event %d: bad hash encoding", e.Seq)
			}
			batch[i] = store.AuditEvent{Seq: e.Seq, Time: e.Time, Actor: e.Actor, Action: e.Action, Subject: e.Subject,
				Result: e.Result, Details: string(e.Details), PrevHash: prev, Hash: hash}
		}
		if err := w.check(batch); err != nil {
			return err
		}
		after = batch[len(batch)-1].Seq
	}
}
