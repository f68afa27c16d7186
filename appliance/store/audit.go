package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// AuditEvent is one entry of the append-only audit log. Each event's Hash
// covers its fields and the previous event's hash, so editing, removing or
// reordering any event breaks every link after it. Events never carry
// secrets: callers put names, ids and outcomes in Details, not credentials
// or key material.
type AuditEvent struct {
	Seq      int64
	Time     time.Time
	Actor    string // "officer:alice", "client:line-3", "system"
	Action   string // "proposal.create", "key.import", ...
	Subject  string // what it acted on
	Result   string // "ok", "refused: ...", "failed: ..."
	Details  string // JSON object
	PrevHash []byte
	Hash     []byte
}

// genesis is the PrevHash of the first event.
var genesis = make([]byte, sha256.Size)

// chainHash is the hash of an event: SHA-256 over prev || a fixed JSON
// encoding of the fields (struct order is fixed, so the encoding is too).
func chainHash(prev []byte, e AuditEvent) []byte {
	body, _ := json.Marshal(struct {
		Seq     int64  `json:"seq"`
		TimeUS  int64  `json:"time_us"`
		Actor   string `json:"actor"`
		Action  string `json:"action"`
		Subject string `json:"subject"`
		Result  string `json:"result"`
		Details string `json:"details"`
	}{e.Seq, micros(e.Time), e.Actor, e.Action, e.Subject, e.Result, e.Details})
	h := sha256.New()
	h.Write(prev)
	h.Write(body)
	return h.Sum(nil)
}

// Audit appends an event in this transaction: it is durable exactly when
// the change it records is. details is marshalled to JSON.
func (t *Tx) Audit(actor, action, subject, result string, details any) (AuditEvent, error) {
	d := "{}"
	if details != nil {
		b, err := json.Marshal(details)
		if err != nil {
			return AuditEvent{}, fmt.Errorf("store: audit details: %w", err)
		}
		d = string(b)
	}
	var last sql.NullInt64
	var prev []byte
	err := t.queryRow(`SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1`).Scan(&last, &prev)
	if errors.Is(err, sql.ErrNoRows) {
		prev, err = genesis, nil
	}
	if err != nil {
		return AuditEvent{}, fmt.Errorf("store: audit tail: %w", err)
	}
	e := AuditEvent{Seq: last.Int64 + 1, Time: t.now, Actor: actor, Action: action, Subject: subject,
		Result: result, Details: d, PrevHash: prev}
	e.Hash = chainHash(prev, e)
	_, err = t.exec(`INSERT INTO audit (seq, time_us, actor, action, subject, result, details, prev_hash, hash)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		e.Seq, micros(e.Time), e.Actor, e.Action, e.Subject, e.Result, e.Details, e.PrevHash, e.Hash)
	if err != nil {
		return AuditEvent{}, fmt.Errorf("store: appending audit event: %w", err)
	}
	t.audits++
	if strings.HasPrefix(actor, "officer:") {
		t.officerAudits++
	}
	return e, nil
}

// AuditEvents returns up to limit events with seq > after, in order.
func (t *Tx) AuditEvents(after int64, limit int) ([]AuditEvent, error) {
	if limit <= 0 || limit > 10000 {
		limit = 10000
	}
	rows, err := t.query(`SELECT seq, time_us, actor, action, subject, result, details, prev_hash, hash
		FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2`, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []AuditEvent
	for rows.Next() {
		var e AuditEvent
		var us int64
		if err := rows.Scan(&e.Seq, &us, &e.Actor, &e.Action, &e.Subject, &e.Result, &e.Details, &e.PrevHash, &e.Hash); err != nil {
			return nil, err
		}
		e.Time = fromMicros(us)
		out = append(out, e)
	}
	return out, rows.Err()
}

// ErrAuditBroken means the audit chain does not verify.
var ErrAuditBroken = errors.New("audit chain broken")

// ChainError names the first event at which the chain breaks.
type ChainError struct {
	Seq    int64
	Reason string
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("audit chain broken at event %d: %s", e.Seq, e.Reason)
}

func (e *ChainError) Unwrap() error { return ErrAuditBroken }

// AuditVerifier checks events in order, one batch at a time.
type AuditVerifier struct {
	prev    []byte
	nextSeq int64
	Count   int64
}

// NewAuditVerifier starts at the genesis of the chain.
func NewAuditVerifier() *AuditVerifier {
	return &AuditVerifier{prev: genesis, nextSeq: 1}
}

// Check verifies the next events; the first broken one is a *ChainError.
func (v *AuditVerifier) Check(events []AuditEvent) error {
	for _, e := range events {
		switch {
		case e.Seq != v.nextSeq:
			return &ChainError{Seq: v.nextSeq, Reason: fmt.Sprintf("event missing (next stored event is %d)", e.Seq)}
		case !bytes.Equal(e.PrevHash, v.prev):
			return &ChainError{Seq: e.Seq, Reason: "previous-hash link does not match the event before it"}
		case !bytes.Equal(e.Hash, chainHash(v.prev, e)):
			return &ChainError{Seq: e.Seq, Reason: "content does not match its hash (event altered)"}
		}
		v.prev, v.nextSeq = e.Hash, e.Seq+1
		v.Count++
	}
	return nil
}

// VerifyAudit walks the whole chain in batches and returns how many
// events verified before the end or the first break.
func (d *DB) VerifyAudit(ctx context.Context) (int64, error) {
	v := NewAuditVerifier()
	var after int64
	for {
		var batch []AuditEvent
		err := d.View(ctx, func(tx *Tx) error {
			var err error
			batch, err = tx.AuditEvents(after, 1000)
			return err
		})
		if err != nil {
			return v.Count, err
		}
		if len(batch) == 0 {
			return v.Count, nil
		}
		if err := v.Check(batch); err != nil {
			return v.Count, err
		}
		after = batch[len(batch)-1].Seq
	}
}
