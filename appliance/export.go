package appliance

import (
	"context"
	"fmt"

	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
)

// Officers read the records in pages with a cursor (the last id or event
// number they have), and export the signing log whole: nothing an officer
// asks for is cut off without the answer saying so.

// ExportPage is how many signing-log rows an export reads from the store
// at once: its memory is one page, whatever the length of the log.
const ExportPage = 1000

// SigningLogPage reads one page of the signing log: at most q.Limit rows
// (1..10000) matching q after q.After, and the cursor of the next page
// when more rows match.
func (a *Appliance) SigningLogPage(ctx context.Context, q LogQuery) (wire.LogPage, error) {
	if q.Limit < 1 || q.Limit > 10000 {
		return wire.LogPage{}, badInput("invalid-argument", "limit must be 1..10000")
	}
	limit := q.Limit
	// One row more than asked tells whether another page follows.
	q.Limit++
	rows, err := a.SigningLog(ctx, q)
	if err != nil {
		return wire.LogPage{}, err
	}
	page := wire.LogPage{Entries: rows}
	if len(rows) > limit {
		page.Entries = rows[:limit]
		page.Next = rows[limit-1].ID
	}
	return page, nil
}

// ExportSigningLog hands fn every row matching q after q.After, in id
// order, one page of ExportPage rows at a time, up to the newest row when
// the export began (rows signed meanwhile are the next export's), and
// returns how many rows it handed over. q.Limit is ignored. Only the
// first read waits for the store to be durable (ViewDurable): every row
// up to the end it fixes is durable then, so the later pages can be
// plain reads, each a short transaction that holds nothing up.
func (a *Appliance) ExportSigningLog(ctx context.Context, q LogQuery, fn func([]wire.LogEntry) error) (int64, error) {
	q.Limit = ExportPage
	var total int64
	var rows []store.LogEntry
	read := func(tx *store.Tx) error {
		var err error
		if q.Upto == 0 {
			if q.Upto, err = tx.LastLogID(); err != nil {
				return err
			}
			if q.Upto == 0 {
				return nil // an empty log
			}
		}
		rows, err = tx.SigningLog(q)
		return err
	}
	if err := a.db.ViewDurable(ctx, read); err != nil {
		return 0, err
	}
	for len(rows) > 0 {
		out := make([]wire.LogEntry, len(rows))
		for i, e := range rows {
			out[i] = wire.LogEntry(e)
		}
		if err := fn(out); err != nil {
			return total, err
		}
		total += int64(len(out))
		if len(rows) < q.Limit {
			break
		}
		q.After = rows[len(rows)-1].ID
		if err := a.db.View(ctx, read); err != nil {
			return total, fmt.Errorf("signing log after row %d: %w", q.After, err)
		}
	}
	return total, nil
}

// AuditPage reads one page of the audit chain: at most limit events
// (1..1000) after event number after, and the cursor of the next page
// when more events follow.
func (a *Appliance) AuditPage(ctx context.Context, after int64, limit int) (wire.AuditPage, error) {
	if limit < 1 || limit > 1000 {
		return wire.AuditPage{}, badInput("invalid-argument", "limit must be 1..1000")
	}
	evs, err := a.AuditEvents(ctx, after, limit+1)
	if err != nil {
		return wire.AuditPage{}, err
	}
	page := wire.AuditPage{Events: evs}
	if len(evs) > limit {
		page.Events = evs[:limit]
		page.Next = evs[limit-1].Seq
	}
	return page, nil
}
