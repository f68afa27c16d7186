package auditverify

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/keyrack/keyrack/appliance/store"
)

// Chain verifies everything one walk of the audit chain can tell, in
// order and one batch at a time (memory stays flat whatever the chain's
// length):
//
//   - every link (store's AuditVerifier);
//   - every approval signature (Approvals);
//   - every checkpoint: signed by an audit key the chain recorded before
//     it, over a head that is the hash the chain holds at that seq, and
//     extending the checkpoint before it;
//   - with a saved head (SetHead): that the chain still extends it;
//   - with records (CheckpointRecords, AuditKeyRecords, LogRows): that the
//     store's tables agree with the chain.
//
// The keys checkpoints are checked against are the ones the chain itself
// records (audit-key.generate events), so an export verifies alone. What
// anchors them is the saved head: a key recorded before the head is
// covered by its hash; keys recorded after it are listed in the report
// for officers to compare with the fingerprints they confirmed.
type Chain struct {
	links     *store.AuditVerifier
	Approvals *Approvals

	keys      map[string]*chainKey
	keyOrder  []string
	appliance string // the store's appliance id, from its appliance.id event

	ring    [ringSize][]byte // hashes of the last ringSize events, by seq
	lastSeq int64

	last     store.Checkpoint // the latest checkpoint in the chain
	haveLast bool
	// Checkpoints counts the checkpoints verified.
	Checkpoints int64

	head       *store.Checkpoint
	headPub    []byte // PKIX DER the head file carries, if any
	headSeen   bool   // the event at head.Seq had head.Head
	headRecord bool   // the event at head.EventSeq records the head

	records bool
	pending []store.Checkpoint // chain checkpoints awaiting their row

	logs      bool
	sigEvents []sigEvent
	logRows   []store.LogEntry
	// Signatures counts signature events matched with their rows.
	Signatures int64
	lastRow    int64

	linksBroke bool
}

// ringSize must exceed store.MaxCheckpointLag: a checkpoint's head is at
// most that far behind the event that records it.
const ringSize = 2 * store.MaxCheckpointLag

type chainKey struct {
	pub *ecdsa.PublicKey
	der []byte
	seq int64 // the event that recorded it
}

type sigEvent struct {
	seq    int64
	logID  int64
	digest string
}

// NewChain starts at the chain's genesis.
func NewChain() *Chain {
	return &Chain{links: store.NewAuditVerifier(), Approvals: New(), keys: map[string]*chainKey{}}
}

// SetHead makes the walk check that the chain extends h (a checkpoint
// saved earlier, by `keyrack audit head` or a log server), whose audit
// key may be given too (PKIX DER, or nil).
func (v *Chain) SetHead(h store.Checkpoint, pub []byte) {
	v.head, v.headPub = &h, pub
}

// WithRecords makes the walk expect the store's checkpoint rows
// (CheckpointRecords) after the events that record them.
func (v *Chain) WithRecords() { v.records = true }

// WithSigningLog makes the walk match signature events with signing-log
// rows (LogRows).
func (v *Chain) WithSigningLog() { v.logs = true }

// LastSeq is the seq of the last event walked.
func (v *Chain) LastSeq() int64 { return v.lastSeq }

// MaxLogID is the highest signing-log row id the walked events name.
func (v *Chain) maxLogID() int64 {
	if n := len(v.sigEvents); n > 0 {
		return v.sigEvents[n-1].logID
	}
	return 0
}

// LinksBroke reports whether the walk stopped at a broken link (as
// opposed to a check of the events' meaning).
func (v *Chain) LinksBroke() bool { return v.linksBroke }

// Check takes the next events of the chain, in order. The first problem
// is a *store.ChainError naming its event.
func (v *Chain) Check(events []store.AuditEvent) error {
	linkErr := v.links.Check(events)
	good := events
	if linkErr != nil {
		var ce *store.ChainError
		if !errors.As(linkErr, &ce) {
			return linkErr
		}
		// The events before the break are still checked for what they
		// say: a forged checkpoint before it is the earlier problem.
		n := 0
		for n < len(events) && events[n].Seq < ce.Seq {
			n++
		}
		good = events[:n]
	}
	if err := v.Approvals.Check(good); err != nil {
		return err
	}
	for _, e := range good {
		if err := v.event(e); err != nil {
			return err
		}
	}
	if linkErr != nil {
		v.linksBroke = true
	}
	return linkErr
}

func (v *Chain) event(e store.AuditEvent) error {
	v.ring[e.Seq%ringSize] = e.Hash
	v.lastSeq = e.Seq
	if e.Result == "ok" {
		switch {
		case e.Action == "appliance.id" && e.Actor == "system":
			v.appliance = e.Subject
		case e.Action == store.ActionAuditKey:
			if err := v.auditKey(e); err != nil {
				return err
			}
		case e.Action == store.ActionAuditCheckpoint:
			if err := v.checkpoint(e); err != nil {
				return err
			}
		case v.logs && strings.HasSuffix(e.Action, ".sign"):
			if err := v.signature(e); err != nil {
				return err
			}
		}
	}
	if h := v.head; h != nil {
		if e.Seq == h.Seq {
			if !bytes.Equal(e.Hash, h.Head) {
				from := v.rewrittenFrom()
				return &store.ChainError{Seq: from, Reason: fmt.Sprintf(
					"the saved head (signed %s) has hash %s for event %d, the chain now has %s: events %d to %d were rewritten (or replaced by another copy) after the head was saved",
					h.Time.Format(time.RFC3339), short(h.Head), e.Seq, short(e.Hash), from, e.Seq)}
			}
			v.headSeen = true
		}
		if e.Seq == h.EventSeq {
			c, err := store.CheckpointFromEvent(e)
			if e.Action != store.ActionAuditCheckpoint || err != nil || !sameCheckpoint(c, *h) {
				return broken(e, "this event should record the saved head's checkpoint (of event %d), and records %s %q instead: the chain after the head was rewritten",
					h.Seq, e.Action, e.Subject)
			}
			v.headRecord = true
		}
	}
	return nil
}

func (v *Chain) auditKey(e store.AuditEvent) error {
	k, err := store.AuditKeyFromEvent(e)
	if err != nil {
		return broken(e, "audit key: %v", err)
	}
	pub, err := parseAuditKey(k.PublicKey)
	if err != nil {
		return broken(e, "audit key %s: %v", k.Fingerprint, err)
	}
	if _, dup := v.keys[k.Fingerprint]; dup {
		return broken(e, "audit key %s recorded a second time", k.Fingerprint)
	}
	v.keys[k.Fingerprint] = &chainKey{pub: pub, der: k.PublicKey, seq: e.Seq}
	v.keyOrder = append(v.keyOrder, k.Fingerprint)
	return nil
}

func parseAuditKey(der []byte) (*ecdsa.PublicKey, error) {
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, err
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, errors.New("not an ECDSA P-256 key")
	}
	return ec, nil
}

// verifyCheckpoint checks c's signature with the key the chain recorded
// under c.Key before event before.
func (v *Chain) verifyCheckpoint(c store.Checkpoint, before int64) error {
	k, ok := v.keys[c.Key]
	if !ok || k.seq >= before {
		return fmt.Errorf("it is signed by audit key %s, which the chain does not record before it (a checkpoint made outside this appliance's tokens)", c.Key)
	}
	if !ecdsa.VerifyASN1(k.pub, c.SignedDigest(), c.Signature) {
		return fmt.Errorf("its signature does not verify with audit key %s: the checkpoint was altered or forged", c.Key)
	}
	return nil
}

func (v *Chain) checkpoint(e store.AuditEvent) error {
	c, err := store.CheckpointFromEvent(e)
	if err != nil {
		return broken(e, "checkpoint: %v", err)
	}
	if err := v.verifyCheckpoint(c, e.Seq); err != nil {
		return broken(e, "checkpoint of event %d: %v", c.Seq, err)
	}
	if v.appliance != "" && c.Appliance != v.appliance {
		return broken(e, "checkpoint of event %d is for appliance %s, this chain's is %s", c.Seq, c.Appliance, v.appliance)
	}
	switch {
	case c.Seq >= e.Seq || c.Seq < 1:
		return broken(e, "checkpoint of event %d recorded at event %d: a checkpoint covers only events before it", c.Seq, e.Seq)
	case e.Seq-c.Seq >= ringSize:
		return broken(e, "checkpoint of event %d recorded %d events later (at most %d)", c.Seq, e.Seq-c.Seq, store.MaxCheckpointLag)
	case v.haveLast && (c.PrevSeq != v.last.Seq || !bytes.Equal(c.PrevHead, v.last.Head)):
		return broken(e, "checkpoint of event %d says the checkpoint before it is of event %d; the chain's is of event %d (a checkpoint was removed or reordered)", c.Seq, c.PrevSeq, v.last.Seq)
	case !v.haveLast && (c.PrevSeq != 0 || len(c.PrevHead) != 0):
		return broken(e, "checkpoint of event %d says a checkpoint of event %d came before it; the chain holds none (checkpoints were removed)", c.Seq, c.PrevSeq)
	case v.haveLast && c.Seq <= v.last.Seq:
		return broken(e, "checkpoint of event %d comes after one of event %d", c.Seq, v.last.Seq)
	}
	if h := v.ring[c.Seq%ringSize]; !bytes.Equal(h, c.Head) {
		from := v.rewrittenFrom()
		return &store.ChainError{Seq: from, Reason: fmt.Sprintf(
			"the checkpoint recorded at event %d signed hash %s for event %d, the chain has %s: events %d to %d were rewritten and their hashes recomputed",
			e.Seq, short(c.Head), c.Seq, short(h), from, c.Seq)}
	}
	v.last, v.haveLast = c, true
	v.Checkpoints++
	if v.records {
		v.pending = append(v.pending, c)
	}
	return nil
}

// rewrittenFrom is the first event a rewrite found now can have touched:
// the one after the latest checkpoint that verified.
func (v *Chain) rewrittenFrom() int64 {
	if v.haveLast {
		return v.last.Seq + 1
	}
	return 1
}

func sameCheckpoint(a, b store.Checkpoint) bool {
	return a.Seq == b.Seq && bytes.Equal(a.Head, b.Head) && a.Time.Equal(b.Time) && a.Appliance == b.Appliance &&
		a.PrevSeq == b.PrevSeq && bytes.Equal(a.PrevHead, b.PrevHead) && a.Key == b.Key &&
		bytes.Equal(a.Signature, b.Signature) && a.EventSeq == b.EventSeq
}

// CheckpointRecords takes the next rows of the store's checkpoints table
// (in event order), each after the events up to the one that records it:
// each must be exactly the checkpoint that event records.
func (v *Chain) CheckpointRecords(rows []store.Checkpoint) error {
	for _, r := range rows {
		if r.EventSeq > v.lastSeq {
			return fmt.Errorf("auditverify: checkpoint row of event %d given before the event", r.EventSeq)
		}
		if len(v.pending) == 0 || v.pending[0].EventSeq > r.EventSeq {
			return &store.ChainError{Seq: r.EventSeq, Reason: fmt.Sprintf(
				"the checkpoints table holds a checkpoint (of event %d) recorded by this event, which records none in the chain: a forged row", r.Seq)}
		}
		c := v.pending[0]
		if c.EventSeq < r.EventSeq {
			return &store.ChainError{Seq: c.EventSeq, Reason: fmt.Sprintf(
				"this event records a checkpoint (of event %d) that the checkpoints table does not hold", c.Seq)}
		}
		if !sameCheckpoint(c, r) {
			return &store.ChainError{Seq: c.EventSeq, Reason: fmt.Sprintf(
				"the checkpoints table's row for the checkpoint this event records (of event %d) differs from it", c.Seq)}
		}
		v.pending = v.pending[1:]
	}
	return nil
}

// AuditKeyRecords checks the store's audit keys table against the keys
// the chain recorded (after the whole chain).
func (v *Chain) AuditKeyRecords(rows []store.AuditKey) error {
	seen := map[string]bool{}
	for _, r := range rows {
		k, ok := v.keys[r.Fingerprint]
		if !ok || k.seq != r.EventSeq || !bytes.Equal(k.der, r.PublicKey) {
			return &TableError{What: "audit key " + r.Fingerprint, Reason: "on record in the store's audit keys, and not as the audit chain recorded it (a key slipped in)"}
		}
		seen[r.Fingerprint] = true
	}
	for _, fp := range v.keyOrder {
		if !seen[fp] {
			return &store.ChainError{Seq: v.keys[fp].seq, Reason: fmt.Sprintf("this event records audit key %s, which the store's audit keys table does not hold", fp)}
		}
	}
	return nil
}

func (v *Chain) signature(e store.AuditEvent) error {
	var d struct {
		LogID  *int64 `json:"log_id"`
		Digest string `json:"digest"`
	}
	if err := json.Unmarshal([]byte(e.Details), &d); err != nil || d.LogID == nil || d.Digest == "" {
		return broken(e, "signature event without its signing-log row and digest")
	}
	if n := len(v.sigEvents); n > 0 && v.sigEvents[n-1].logID >= *d.LogID || *d.LogID <= v.lastRow {
		return broken(e, "signature event names signing-log row %d out of order", *d.LogID)
	}
	v.sigEvents = append(v.sigEvents, sigEvent{seq: e.Seq, logID: *d.LogID, digest: d.Digest})
	return v.match(false)
}

// LogError names a signing-log row that disagrees with the audit chain.
type LogError struct {
	Row    int64
	Reason string
}

func (e *LogError) Error() string { return fmt.Sprintf("signing-log row %d: %s", e.Row, e.Reason) }

// LogRows takes the next signing-log rows in id order. Rows and signature
// events are both in commit order (each signature's row and event are
// written in one transaction, under the store's write lock), so they are
// matched as two sorted streams.
func (v *Chain) LogRows(rows []store.LogEntry) error {
	for _, r := range rows {
		if r.ID <= v.lastRow {
			return &LogError{Row: r.ID, Reason: "out of order"}
		}
		v.lastRow = r.ID
		v.logRows = append(v.logRows, r)
	}
	return v.match(false)
}

func (v *Chain) match(final bool) error {
	for len(v.sigEvents) > 0 && len(v.logRows) > 0 {
		ev, row := v.sigEvents[0], v.logRows[0]
		switch {
		case ev.logID == row.ID:
			if ev.digest != row.Digest {
				return &store.ChainError{Seq: ev.seq, Reason: fmt.Sprintf("this signature event's digest %s is not that of signing-log row %d (%s)", ev.digest, row.ID, row.Digest)}
			}
			v.Signatures++
			v.sigEvents, v.logRows = v.sigEvents[1:], v.logRows[1:]
		case ev.logID < row.ID:
			return &store.ChainError{Seq: ev.seq, Reason: fmt.Sprintf("this signature event records signing-log row %d (digest %s), which the signing log does not hold", ev.logID, ev.digest)}
		default:
			return &LogError{Row: row.ID, Reason: fmt.Sprintf("%s %s/%s/%s digest %s has no signature event in the audit chain", row.Type, row.Brand, row.Model, row.Serial, row.Digest)}
		}
	}
	if final {
		if len(v.sigEvents) > 0 {
			ev := v.sigEvents[0]
			return &store.ChainError{Seq: ev.seq, Reason: fmt.Sprintf("this signature event records signing-log row %d (digest %s), which the signing log does not hold", ev.logID, ev.digest)}
		}
		if len(v.logRows) > 0 {
			row := v.logRows[0]
			return &LogError{Row: row.ID, Reason: fmt.Sprintf("%s %s/%s/%s digest %s has no signature event in the audit chain", row.Type, row.Brand, row.Model, row.Serial, row.Digest)}
		}
	}
	return nil
}

// TableError names a record of the store, other than a proposal or a
// signing-log row, that disagrees with the chain.
type TableError struct{ What, Reason string }

func (e *TableError) Error() string { return e.What + ": " + e.Reason }

// HeadError: the saved head itself does not verify.
type HeadError struct{ Reason string }

func (e *HeadError) Error() string { return "saved head: " + e.Reason }

// Report is what a complete walk found.
type Report struct {
	Events      int64
	Approvals   int
	Checkpoints int64
	Signatures  int64 // signature events matched with signing-log rows
	// LastCheckpoint is the head of the latest checkpoint (0: none);
	// NotCovered counts the events after it, which no signature covers
	// yet (the latest checkpoint's own event among them).
	LastCheckpoint int64
	NotCovered     int64
	Keys           []ReportKey
	HeadChecked    bool
	// Proposals counts the proposals on record checked against the
	// chain (VerifyStore only).
	Proposals int
}

// ReportKey is an audit key the chain records.
type ReportKey struct {
	Fingerprint string
	Event       int64
	// AfterHead: recorded after the saved head, so nothing saved outside
	// the store vouches for it: officers compare it with the fingerprint
	// they confirmed.
	AfterHead bool
}

// Finish ends the walk: the saved head must have been reached, and every
// record matched.
func (v *Chain) Finish() (Report, error) {
	if h := v.head; h != nil {
		if !v.headSeen || !v.headRecord {
			end := max(h.Seq, h.EventSeq)
			return Report{}, &store.ChainError{Seq: v.lastSeq + 1, Reason: fmt.Sprintf(
				"missing: the saved head covers events to %d (recorded at event %d), the chain ends at event %d: %d events were removed since the head was saved (the tail cut off, or the store rolled back to an older copy)",
				h.Seq, h.EventSeq, v.lastSeq, end-v.lastSeq)}
		}
		if err := v.verifyCheckpoint(*h, h.Seq+1); err != nil {
			return Report{}, &HeadError{Reason: err.Error()}
		}
		if v.headPub != nil && !bytes.Equal(v.headPub, v.keys[h.Key].der) {
			return Report{}, &HeadError{Reason: fmt.Sprintf("its public key is not audit key %s as the chain records it", h.Key)}
		}
	}
	if v.records && len(v.pending) > 0 {
		c := v.pending[0]
		return Report{}, &store.ChainError{Seq: c.EventSeq, Reason: fmt.Sprintf("this event records a checkpoint (of event %d) that the checkpoints table does not hold", c.Seq)}
	}
	if v.logs {
		if err := v.match(true); err != nil {
			return Report{}, err
		}
	}
	r := Report{Events: v.links.Count, Approvals: v.Approvals.Verified, Checkpoints: v.Checkpoints, Signatures: v.Signatures,
		NotCovered: v.lastSeq, HeadChecked: v.head != nil}
	if v.haveLast {
		r.LastCheckpoint, r.NotCovered = v.last.Seq, v.lastSeq-v.last.Seq
	}
	for _, fp := range v.keyOrder {
		k := v.keys[fp]
		r.Keys = append(r.Keys, ReportKey{Fingerprint: fp, Event: k.seq, AfterHead: v.head == nil || k.seq > v.head.Seq})
	}
	return r, nil
}

func short(h []byte) string {
	s := hex.EncodeToString(h)
	if len(s) > 16 {
		return s[:16] + "…"
	}
	return s
}
