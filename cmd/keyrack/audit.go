package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"

	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
)

// auditVerify walks the audit hash chain, from the store file (-db) or
// through the API, and names the first broken event.
func (c *cli) auditVerify(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	dbPath := fs.String("db", "", "verify the store file directly (read-only) instead of asking the appliance")
	if err := fs.Parse(args); err != nil {
		return usageErr("audit verify [-db PATH]")
	}
	var n int64
	var err error
	if *dbPath != "" {
		var db *store.DB
		if db, err = store.OpenSQLiteReadOnly(ctx, *dbPath); err != nil {
			return err
		}
		defer db.Close()
		n, err = db.VerifyAudit(ctx)
	} else {
		n, err = c.verifyOverAPI(ctx)
	}
	var ce *store.ChainError
	if errors.As(err, &ce) {
		fmt.Fprintf(c.stdout, "BROKEN at event %d: %s (%d events before it verify)\n", ce.Seq, ce.Reason, n)
		return fmt.Errorf("audit chain broken at event %d", ce.Seq)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "audit chain OK: %d events\n", n)
	return nil
}

func (c *cli) verifyOverAPI(ctx context.Context) (int64, error) {
	v := store.NewAuditVerifier()
	var after int64
	for {
		var ans wire.AuditPage
		if _, err := c.call(ctx, "GET", fmt.Sprintf("/v1/audit?after=%d&limit=1000", after), nil, &ans, true); err != nil {
			return v.Count, err
		}
		if len(ans.Events) == 0 {
			return v.Count, nil
		}
		batch := make([]store.AuditEvent, len(ans.Events))
		for i, e := range ans.Events {
			prev, err1 := hex.DecodeString(e.PrevHash)
			hash, err2 := hex.DecodeString(e.Hash)
			if err1 != nil || err2 != nil {
				return v.Count, fmt.Errorf("event %d: bad hash encoding", e.Seq)
			}
			batch[i] = store.AuditEvent{Seq: e.Seq, Time: e.Time, Actor: e.Actor, Action: e.Action, Subject: e.Subject,
				Result: e.Result, Details: string(e.Details), PrevHash: prev, Hash: hash}
		}
		if err := v.Check(batch); err != nil {
			return v.Count, err
		}
		after = batch[len(batch)-1].Seq
	}
}
