package appliance

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
)

// Checkpoints anchor the audit chain in the token (store/checkpoints.go
// says what one is). They are made off every request's path: a goroutine
// (RunCheckpoints) wakes after a commit that held an officer's event or
// that crossed a multiple of checkpointEvents events, and once per
// checkpointInterval; keyrackd makes a last one when it stops cleanly.
// A checkpoint costs one token signature and two small transactions, and
// none is made while nothing but checkpoints happened.
const (
	checkpointEvents   = 1000
	checkpointInterval = time.Minute
	// checkpointAttempts bounds the retries when another appliance's
	// checkpoint (or a burst of events) overtakes ours between signing
	// and recording it.
	checkpointAttempts = 5
)

// ErrNoAuditKey: the appliance was made without its audit key (tests of
// other parts).
var ErrNoAuditKey = errors.New("no audit key")

type checkpoints struct {
	// mu makes one checkpoint at a time in this process; across
	// appliances RecordCheckpoint's check under the store's write lock
	// does.
	mu      sync.Mutex
	signal  <-chan struct{}
	made    prometheus.Counter
	every   time.Duration
	lastErr time.Time // when a failure was last logged (failures repeat)
}

func (a *Appliance) initCheckpoints() {
	a.ckpt.signal = a.db.AuditSignal(checkpointEvents)
	a.ckpt.every = checkpointInterval
	a.ckpt.made = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keyrack_audit_checkpoints_total",
		Help: "Audit checkpoints this appliance signed and recorded.",
	})
	a.metrics.reg.MustRegister(a.ckpt.made)
}

// RunCheckpoints checkpoints the audit chain until ctx is done: after an
// officer's action, every checkpointEvents events and every
// checkpointInterval while events arrive.
func (a *Appliance) RunCheckpoints(ctx context.Context) {
	t := time.NewTicker(a.ckpt.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.ckpt.signal:
		case <-t.C:
		}
		if _, _, err := a.Checkpoint(ctx); err != nil && ctx.Err() == nil {
			if time.Since(a.ckpt.lastErr) > time.Minute {
				a.log.Error("audit checkpoint failed", "err", err)
				a.ckpt.lastErr = time.Now()
			}
		}
	}
}

// Checkpoint signs the chain's current head with the audit key and
// records it, unless nothing but checkpoints happened since the latest
// one (made by any appliance on the store). It returns the latest
// checkpoint and whether it made it.
func (a *Appliance) Checkpoint(ctx context.Context) (store.Checkpoint, bool, error) {
	if a.auditKey.key == nil {
		return store.Checkpoint{}, false, ErrNoAuditKey
	}
	a.ckpt.mu.Lock()
	defer a.ckpt.mu.Unlock()
	var err error
	for attempt := 0; attempt < checkpointAttempts; attempt++ {
		var c store.Checkpoint
		var made bool
		c, made, err = a.checkpointOnce(ctx)
		if err == nil {
			if made {
				a.ckpt.made.Inc()
				// One structured line per checkpoint, so a log server
				// keeps the heads out of the store administrator's reach.
				a.log.Info("audit checkpoint", "event", "audit.checkpoint", "seq", c.Seq, "head", hex.EncodeToString(c.Head),
					"event_seq", c.EventSeq, "prev_seq", c.PrevSeq, "time", c.Time.Format(time.RFC3339Nano),
					"appliance", c.Appliance, "key", c.Key, "signature", base64.StdEncoding.EncodeToString(c.Signature))
			}
			return c, made, nil
		}
		if !errors.Is(err, store.ErrCheckpointStale) && !errors.Is(err, store.ErrConflict) {
			break
		}
	}
	return store.Checkpoint{}, false, fmt.Errorf("audit checkpoint: %w", err)
}

func (a *Appliance) checkpointOnce(ctx context.Context) (store.Checkpoint, bool, error) {
	var head int64
	var hash []byte
	var last store.Checkpoint
	haveLast := true
	err := a.db.View(ctx, func(tx *store.Tx) error {
		var err error
		if head, hash, err = tx.AuditHead(); err != nil {
			return err
		}
		last, err = tx.LatestCheckpoint()
		if errors.Is(err, store.ErrNotFound) {
			haveLast, err = false, nil
		}
		return err
	})
	if err != nil {
		return store.Checkpoint{}, false, err
	}
	if head == 0 || haveLast && (head == last.EventSeq || head == last.Seq) {
		return last, false, nil
	}
	c := store.Checkpoint{Seq: head, Head: hash, Time: time.Now().UTC().Truncate(time.Microsecond), Appliance: a.id,
		Key: a.auditKey.rec.Fingerprint}
	if haveLast {
		c.PrevSeq, c.PrevHead = last.Seq, last.Head
	}
	// The signature is made between the two transactions: a token
	// signature inside one would hold the store's writer (and on
	// PostgreSQL every appliance's) for its duration.
	if c.Signature, err = a.auditKey.key.SignContext(ctx, c.SignedDigest(), crypto.SHA256); err != nil {
		return store.Checkpoint{}, false, fmt.Errorf("signing in the token: %w", err)
	}
	err = a.db.Update(ctx, func(tx *store.Tx) error {
		var err error
		c, err = tx.RecordCheckpoint(c)
		return err
	})
	if err != nil {
		return store.Checkpoint{}, false, err
	}
	return c, true, nil
}

// checkpointWire is c as the API gives it, with the public key that
// signed it when keys holds it.
func (a *Appliance) checkpointWire(c store.Checkpoint, keys map[string]store.AuditKey) wire.AuditCheckpoint {
	w := wire.AuditCheckpoint{Seq: c.Seq, Head: hex.EncodeToString(c.Head), Time: c.Time, Appliance: c.Appliance,
		PrevSeq: c.PrevSeq, PrevHead: hex.EncodeToString(c.PrevHead), Key: c.Key, Signature: c.Signature, EventSeq: c.EventSeq}
	if k, ok := keys[c.Key]; ok {
		w.PublicKeyPEM = string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: k.PublicKey}))
	}
	return w
}

// ErrNoCheckpoint: the chain has no checkpoint yet.
var ErrNoCheckpoint = errors.New("no audit checkpoint yet")

// AuditHead returns the latest signed checkpoint, with its key, read
// durably (a head a crash could take back would later look like
// tampering).
func (a *Appliance) AuditHead(ctx context.Context) (wire.AuditCheckpoint, error) {
	var c store.Checkpoint
	keys := map[string]store.AuditKey{}
	err := a.db.ViewDurable(ctx, func(tx *store.Tx) error {
		var err error
		if c, err = tx.LatestCheckpoint(); err != nil {
			return err
		}
		ks, err := tx.AuditKeys()
		for _, k := range ks {
			keys[k.Fingerprint] = k
		}
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return wire.AuditCheckpoint{}, &Error{Kind: NotFound, Code: "no-checkpoint", Message: ErrNoCheckpoint.Error(), Err: ErrNoCheckpoint}
	}
	if err != nil {
		return wire.AuditCheckpoint{}, err
	}
	return a.checkpointWire(c, keys), nil
}

// AuditCheckpoints returns up to limit checkpoints recorded by events
// after afterEvent, in chain order.
func (a *Appliance) AuditCheckpoints(ctx context.Context, afterEvent int64, limit int) ([]wire.AuditCheckpoint, error) {
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	var cs []store.Checkpoint
	if err := a.db.ViewDurable(ctx, func(tx *store.Tx) error {
		var err error
		cs, err = tx.Checkpoints(afterEvent, limit)
		return err
	}); err != nil {
		return nil, err
	}
	out := make([]wire.AuditCheckpoint, len(cs))
	for i, c := range cs {
		out[i] = a.checkpointWire(c, nil)
	}
	return out, nil
}
