package store

import (
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// The audit chain alone is a hash chain anyone with write access to the
// store can rewrite and recompute. Checkpoints anchor it: each is a
// signature, made inside an appliance's token with its audit key, over the
// chain's head (the seq and hash of its last event) at a moment. Each is
// recorded twice: as an audit event (so the chain covers it) and as a row
// of audit_checkpoints (so the latest is found without walking the chain).
// A checkpoint signs the head *before* the event that records it: that
// event is covered by the next checkpoint.

// Actions of the audit events that record audit keys and checkpoints.
const (
	ActionAuditKey        = "audit-key.generate"
	ActionAuditCheckpoint = "audit.checkpoint"
)

// AuditKey is the public half of an appliance's audit key.
type AuditKey struct {
	Fingerprint string // SHA-256 of PublicKey, hex
	PublicKey   []byte // PKIX DER
	TokenSerial string
	EventSeq    int64 // the audit-key.generate event
	Created     time.Time
}

// AuditKeyFingerprint is SHA-256 of a PKIX DER public key, in hex.
func AuditKeyFingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// auditKeyDetails is the details of an audit-key.generate event.
type auditKeyDetails struct {
	Fingerprint string `json:"fingerprint"`
	PublicKey   []byte `json:"public_key"` // PKIX DER, base64 in JSON
	Algorithm   string `json:"algorithm"`
	TokenSerial string `json:"token_serial"`
}

// AuditKeyAlgorithm is the one algorithm of audit keys.
const AuditKeyAlgorithm = "ECDSA-P256-SHA256"

// PutAuditKey records a new audit key: an audit event in the chain and
// its row. A fingerprint recorded already is ErrExists.
func (t *Tx) PutAuditKey(k AuditKey) (AuditKey, error) {
	if AuditKeyFingerprint(k.PublicKey) != k.Fingerprint {
		return AuditKey{}, fmt.Errorf("store: audit key: fingerprint does not match the key")
	}
	e, err := t.Audit("system", ActionAuditKey, k.Fingerprint, "ok",
		auditKeyDetails{Fingerprint: k.Fingerprint, PublicKey: k.PublicKey, Algorithm: AuditKeyAlgorithm, TokenSerial: k.TokenSerial})
	if err != nil {
		return AuditKey{}, err
	}
	k.EventSeq, k.Created = e.Seq, t.now
	res, err := t.exec(`INSERT INTO audit_keys (fingerprint, public_key, token_serial, event_seq, created_us)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, k.Fingerprint, k.PublicKey, k.TokenSerial, k.EventSeq, micros(t.now))
	if err := inserted(res, err, "audit key"); err != nil {
		return AuditKey{}, err
	}
	return k, nil
}

// AuditKeyFromEvent reads the audit key an audit-key.generate event
// records, checking that its fingerprint is that of its key.
func AuditKeyFromEvent(e AuditEvent) (AuditKey, error) {
	var d auditKeyDetails
	if err := json.Unmarshal([]byte(e.Details), &d); err != nil {
		return AuditKey{}, fmt.Errorf("unreadable audit key details: %w", err)
	}
	if d.Algorithm != AuditKeyAlgorithm {
		return AuditKey{}, fmt.Errorf("audit key algorithm %q, want %s", d.Algorithm, AuditKeyAlgorithm)
	}
	if AuditKeyFingerprint(d.PublicKey) != d.Fingerprint || d.Fingerprint != e.Subject {
		return AuditKey{}, errors.New("the audit key's fingerprint is not that of the key it records")
	}
	return AuditKey{Fingerprint: d.Fingerprint, PublicKey: d.PublicKey, TokenSerial: d.TokenSerial, EventSeq: e.Seq, Created: e.Time}, nil
}

// AuditKeys returns every audit key on record, in the order they were made.
func (t *Tx) AuditKeys() ([]AuditKey, error) {
	rows, err := t.query(`SELECT fingerprint, public_key, token_serial, event_seq, created_us FROM audit_keys ORDER BY event_seq`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []AuditKey
	for rows.Next() {
		var k AuditKey
		var us int64
		if err := rows.Scan(&k.Fingerprint, &k.PublicKey, &k.TokenSerial, &k.EventSeq, &us); err != nil {
			return nil, err
		}
		k.Created = fromMicros(us)
		out = append(out, k)
	}
	return out, rows.Err()
}

// Checkpoint is a signed head of the audit chain.
type Checkpoint struct {
	Seq       int64  // the last event it covers
	Head      []byte // that event's hash
	Time      time.Time
	Appliance string // the appliance id of the store
	PrevSeq   int64  // the previous checkpoint's Seq, 0 for the first
	PrevHead  []byte // the previous checkpoint's Head, empty for the first
	Key       string // fingerprint of the audit key that signed it
	Signature []byte // ECDSA (ASN.1) over SignedDigest
	EventSeq  int64  // the audit.checkpoint event that records it
}

// checkpointSigned is what a checkpoint's signature covers, in this
// order: every field but the signature and the event that records it
// (which does not exist yet when it is signed).
type checkpointSigned struct {
	Format    string `json:"format"`
	Seq       int64  `json:"seq"`
	Head      string `json:"head"`
	TimeUS    int64  `json:"time_us"`
	Appliance string `json:"appliance"`
	PrevSeq   int64  `json:"prev_seq"`
	PrevHead  string `json:"prev_head"`
	Key       string `json:"key"`
}

// checkpointFormat names the signed encoding; a domain separator too, so
// that the audit key's signature over anything else never reads as a
// checkpoint.
const checkpointFormat = "keyrack-audit-checkpoint/1"

// SignedBytes is the exact byte string a checkpoint's signature covers
// (through SHA-256): a fixed JSON encoding of its fields.
func (c Checkpoint) SignedBytes() []byte {
	b, _ := json.Marshal(checkpointSigned{Format: checkpointFormat, Seq: c.Seq, Head: hex.EncodeToString(c.Head),
		TimeUS: micros(c.Time), Appliance: c.Appliance, PrevSeq: c.PrevSeq, PrevHead: hex.EncodeToString(c.PrevHead), Key: c.Key})
	return b
}

// SignedDigest is SHA-256 of SignedBytes: what the token signs.
func (c Checkpoint) SignedDigest() []byte {
	sum := sha256.Sum256(c.SignedBytes())
	return sum[:]
}

// checkpointDetails is the details of an audit.checkpoint event.
type checkpointDetails struct {
	Seq       int64  `json:"seq"`
	Head      string `json:"head"`
	TimeUS    int64  `json:"time_us"`
	Appliance string `json:"appliance"`
	PrevSeq   int64  `json:"prev_seq"`
	PrevHead  string `json:"prev_head"`
	Key       string `json:"key"`
	Signature []byte `json:"signature"`
}

// CheckpointFromEvent reads the checkpoint an audit.checkpoint event
// records (its signature is not checked here).
func CheckpointFromEvent(e AuditEvent) (Checkpoint, error) {
	var d checkpointDetails
	if err := json.Unmarshal([]byte(e.Details), &d); err != nil {
		return Checkpoint{}, fmt.Errorf("unreadable checkpoint details: %w", err)
	}
	head, err1 := hex.DecodeString(d.Head)
	prev, err2 := hex.DecodeString(d.PrevHead)
	if err1 != nil || err2 != nil {
		return Checkpoint{}, errors.New("checkpoint hashes are not hex")
	}
	return Checkpoint{Seq: d.Seq, Head: head, Time: fromMicros(d.TimeUS), Appliance: d.Appliance, PrevSeq: d.PrevSeq,
		PrevHead: prev, Key: d.Key, Signature: d.Signature, EventSeq: e.Seq}, nil
}

// AuditHead returns the seq and hash of the chain's last event (0 and
// the genesis hash for an empty chain).
func (t *Tx) AuditHead() (int64, []byte, error) {
	var seq int64
	var hash []byte
	err := t.queryRow(`SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1`).Scan(&seq, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, genesis, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("store: audit head: %w", err)
	}
	return seq, hash, nil
}

// MaxCheckpointLag bounds how far behind the chain's head a checkpoint's
// head may be when it is recorded. The checkpoint is signed between two
// transactions (never inside one: a token signature must not hold the
// writer) and events arrive meanwhile; the bound lets a verifier keep
// only the hashes of the last events it walked to check a checkpoint's
// head (see auditverify).
const MaxCheckpointLag = 4096

// ErrCheckpointStale: a checkpoint was signed over a state that changed
// before it could be recorded (another checkpoint came first, or the
// chain ran too far ahead). The caller signs a new one.
var ErrCheckpointStale = errors.New("checkpoint overtaken: sign again")

// RecordCheckpoint records a signed checkpoint: its audit event and its
// row. The checkpoint must extend the latest one on record (c.PrevSeq is
// its Seq), and its head must still be in the chain with that hash.
func (t *Tx) RecordCheckpoint(c Checkpoint) (Checkpoint, error) {
	last, err := t.LatestCheckpoint()
	switch {
	case errors.Is(err, ErrNotFound):
		last = Checkpoint{}
	case err != nil:
		return Checkpoint{}, err
	}
	if last.Seq != c.PrevSeq || string(last.Head) != string(c.PrevHead) || c.Seq <= last.Seq {
		return Checkpoint{}, fmt.Errorf("store: checkpoint at %d after %d: %w (latest is at %d)", c.Seq, c.PrevSeq, ErrCheckpointStale, last.Seq)
	}
	var hash []byte
	if err := t.queryRow(`SELECT hash FROM audit WHERE seq = $1`, c.Seq).Scan(&hash); err != nil {
		return Checkpoint{}, fmt.Errorf("store: checkpoint head %d: %w", c.Seq, err)
	}
	if string(hash) != string(c.Head) {
		return Checkpoint{}, fmt.Errorf("store: checkpoint head %d does not match the chain: %w", c.Seq, ErrConflict)
	}
	head, _, err := t.AuditHead()
	if err != nil {
		return Checkpoint{}, err
	}
	if head-c.Seq >= MaxCheckpointLag {
		return Checkpoint{}, fmt.Errorf("store: checkpoint at %d, chain at %d: %w", c.Seq, head, ErrCheckpointStale)
	}
	e, err := t.Audit("system", ActionAuditCheckpoint, fmt.Sprintf("checkpoint %d", c.Seq), "ok", checkpointDetails{
		Seq: c.Seq, Head: hex.EncodeToString(c.Head), TimeUS: micros(c.Time), Appliance: c.Appliance, PrevSeq: c.PrevSeq,
		PrevHead: hex.EncodeToString(c.PrevHead), Key: c.Key, Signature: c.Signature})
	if err != nil {
		return Checkpoint{}, err
	}
	c.EventSeq = e.Seq
	_, err = t.exec(`INSERT INTO audit_checkpoints (seq, head, time_us, appliance, prev_seq, prev_head, key, signature, event_seq)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		c.Seq, c.Head, micros(c.Time), c.Appliance, c.PrevSeq, nonNil(c.PrevHead), c.Key, c.Signature, c.EventSeq)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("store: recording checkpoint: %w", err)
	}
	return c, nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

const checkpointColumns = `seq, head, time_us, appliance, prev_seq, prev_head, key, signature, event_seq`

func scanCheckpoint(sc interface{ Scan(...any) error }) (Checkpoint, error) {
	var c Checkpoint
	var us int64
	err := sc.Scan(&c.Seq, &c.Head, &us, &c.Appliance, &c.PrevSeq, &c.PrevHead, &c.Key, &c.Signature, &c.EventSeq)
	c.Time = fromMicros(us)
	if len(c.PrevHead) == 0 {
		c.PrevHead = nil
	}
	return c, err
}

// LatestCheckpoint returns the checkpoint with the highest head, or
// ErrNotFound.
func (t *Tx) LatestCheckpoint() (Checkpoint, error) {
	c, err := scanCheckpoint(t.queryRow(`SELECT ` + checkpointColumns + ` FROM audit_checkpoints ORDER BY seq DESC LIMIT 1`))
	if errors.Is(err, sql.ErrNoRows) {
		return Checkpoint{}, fmt.Errorf("store: checkpoint: %w", ErrNotFound)
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("store: latest checkpoint: %w", err)
	}
	return c, nil
}

// Checkpoints returns up to limit checkpoints recorded by events with seq
// > afterEvent, in chain order.
func (t *Tx) Checkpoints(afterEvent int64, limit int) ([]Checkpoint, error) {
	if limit <= 0 || limit > 10000 {
		limit = 10000
	}
	rows, err := t.query(`SELECT `+checkpointColumns+` FROM audit_checkpoints WHERE event_seq > $1 ORDER BY event_seq LIMIT $2`, afterEvent, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Checkpoint
	for rows.Next() {
		c, err := scanCheckpoint(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// AuditSignal returns a channel that receives (without ever blocking the
// writer; signals coalesce) after a commit that held an audit event by an
// officer, or that brought the number of audit events this process
// committed past a multiple of every. It is for the one goroutine that
// checkpoints the chain; a second call replaces the first's channel.
func (d *DB) AuditSignal(every int) <-chan struct{} {
	s := &auditSignal{ch: make(chan struct{}, 1), every: uint64(max(every, 1))}
	d.auditSignal.Store(s)
	return s.ch
}

type auditSignal struct {
	ch    chan struct{}
	every uint64
}

// signalAudits runs on the writer after a commit of n audit events,
// officer of them by officers: two atomic loads when nobody listens or
// nothing crossed a threshold.
func (d *DB) signalAudits(n, officer int) {
	s := d.auditSignal.Load()
	if s == nil || n == 0 {
		return
	}
	total := d.audits.Load()
	if officer == 0 && total/s.every == (total-uint64(n))/s.every {
		return
	}
	select {
	case s.ch <- struct{}{}:
	default:
	}
}
