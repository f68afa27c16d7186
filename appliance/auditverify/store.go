package auditverify

import (
	"context"
	"fmt"

	"github.com/keyrack/keyrack/appliance/store"
)

// batch is how many events and rows one read transaction takes.
const batch = 1000

// VerifyStore walks a whole store, one batch at a time: the chain (with
// head, when not nil, as a saved head and headPub its key), the
// checkpoints and audit keys tables against it, every signing-log row
// against its signature event and back, and every proposal on record
// against the approvals the chain recorded.
func VerifyStore(ctx context.Context, db *store.DB, head *store.Checkpoint, headPub []byte) (Report, error) {
	v := NewChain()
	v.WithRecords()
	v.WithSigningLog()
	if head != nil {
		v.SetHead(*head, headPub)
	}
	var afterEvent, afterRow, afterCkpt int64
	// feedLog gives the verifier the signing-log rows after afterRow up to
	// upto, a batch at a time.
	feedLog := func(upto int64) error {
		for afterRow < upto {
			rows, err := logRows(ctx, db, afterRow, upto)
			if err != nil {
				return err
			}
			if len(rows) == 0 {
				return nil
			}
			if err := v.LogRows(rows); err != nil {
				return err
			}
			afterRow = rows[len(rows)-1].ID
		}
		return nil
	}
	for {
		var evs []store.AuditEvent
		if err := db.View(ctx, func(tx *store.Tx) error {
			var err error
			evs, err = tx.AuditEvents(afterEvent, batch)
			return err
		}); err != nil {
			return Report{}, err
		}
		if len(evs) == 0 {
			break
		}
		if err := v.Check(evs); err != nil {
			return Report{}, err
		}
		afterEvent = evs[len(evs)-1].Seq
		// The rows the events walked so far name (checkpoints recorded by
		// them, signing-log rows up to the highest they name): each table
		// is read in order alongside the chain, never whole.
		for {
			var cs []store.Checkpoint
			if err := db.View(ctx, func(tx *store.Tx) error {
				var err error
				cs, err = tx.Checkpoints(afterCkpt, batch)
				return err
			}); err != nil {
				return Report{}, err
			}
			n := 0
			for n < len(cs) && cs[n].EventSeq <= afterEvent {
				n++
			}
			if err := v.CheckpointRecords(cs[:n]); err != nil {
				return Report{}, err
			}
			if n > 0 {
				afterCkpt = cs[n-1].EventSeq
			}
			if n < batch {
				break
			}
		}
		if err := feedLog(v.maxLogID()); err != nil {
			return Report{}, err
		}
	}
	// What the tables hold beyond the chain's end.
	var extra []store.Checkpoint
	if err := db.View(ctx, func(tx *store.Tx) error {
		var err error
		extra, err = tx.Checkpoints(afterCkpt, 1)
		return err
	}); err != nil {
		return Report{}, err
	}
	if len(extra) > 0 {
		return Report{}, &store.ChainError{Seq: extra[0].EventSeq, Reason: fmt.Sprintf(
			"missing: the checkpoints table holds a checkpoint (of event %d) recorded by this event, past the chain's end at event %d (events removed, or a forged row)",
			extra[0].Seq, v.LastSeq())}
	}
	// The rows past every event: each is a row without its event.
	if err := feedLog(1 << 62); err != nil {
		return Report{}, err
	}
	var keys []store.AuditKey
	var props []store.Proposal
	if err := db.View(ctx, func(tx *store.Tx) error {
		var err error
		if keys, err = tx.AuditKeys(); err != nil {
			return err
		}
		props, err = tx.ListProposals("", 1000)
		return err
	}); err != nil {
		return Report{}, err
	}
	r, err := v.Finish()
	if err != nil {
		return Report{}, err
	}
	if err := v.AuditKeyRecords(keys); err != nil {
		return Report{}, err
	}
	for _, p := range props {
		if err := v.Approvals.CheckRecord(p); err != nil {
			return Report{}, err
		}
	}
	r.Proposals = len(props)
	return r, nil
}

func logRows(ctx context.Context, db *store.DB, after, upTo int64) ([]store.LogEntry, error) {
	var rows []store.LogEntry
	err := db.View(ctx, func(tx *store.Tx) error {
		var err error
		rows, err = tx.SigningLog(store.LogFilter{After: after, Limit: batch})
		return err
	})
	n := 0
	for n < len(rows) && rows[n].ID <= upTo {
		n++
	}
	return rows[:n], err
}
