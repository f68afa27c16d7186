// Package appliance is keyrack's core: the decisions behind every request,
// whichever front end received it. It holds the ceremonies (propose,
// approve, execute, reconcile), the signing services (serials, models,
// system-users, preseeds, account-key-requests), their caches, admission
// to the signing queue, credentials and the configuration.
//
// It reaches the token only through package hsm and the records only
// through package store, and it imports neither echo nor net/http: a
// front end decodes a request, makes one call here and encodes what comes
// back. Errors are *Error values of a neutral ErrorKind (AsError
// classifies any error); the front end chooses the status. It may import
// policy, hsm, store, assertion, keyfile, keywrap and wire, never a front
// end.
package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyrack/keyrack/appliance/assertion"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
	"github.com/keyrack/keyrack/hsm"
)

// Appliance is the core of a running keyrackd: a token, a store and the
// configuration they run under.
type Appliance struct {
	id        string // see ensureApplianceID
	cfg       Config
	mod       *hsm.Module
	db        *store.DB
	log       *slog.Logger
	metrics   *metrics
	importKey *hsm.Key
	auditKey  auditKey
	ckpt      checkpoints
	cache     keyCache
	// admit holds one token per signing request in progress; its capacity
	// is the bound of the signing queue.
	admit chan struct{}
	// limiter throttles failed authentications.
	limiter *authLimiter
	// loginFails aggregates failed officer logins for the audit chain.
	loginFails loginFails
	// signRefusals aggregates refusals of stopped keys and clients for
	// the audit chain (refusals.go).
	signRefusals signingRefusals
	// challenges bounds login challenges per source address.
	challenges *authLimiter
	// requestIDKey is the MAC secret of request-ids, shared through the
	// store by the appliances on it.
	requestIDKey []byte
}

// New opens the core on an open token module and store: it finds or makes
// the import key and repairs what an interrupted ceremony left.
func New(ctx context.Context, cfg Config, mod *hsm.Module, db *store.DB, log *slog.Logger) (*Appliance, error) {
	a := &Appliance{cfg: cfg, mod: mod, db: db, log: log, metrics: newMetrics(mod, db, wire.Version),
		cache: keyCache{roles: map[string]roles{}, keys: map[string]*hsm.Key{}, signers: map[string]*assertion.Signer{},
			bindings: map[bindingKey]binding{}, clients: map[string]cachedClient{}},
		admit:      make(chan struct{}, cfg.Limits.SigningSlots(mod.Sessions())),
		limiter:    newAuthLimiter(cfg.Limits.AuthFailures, time.Duration(cfg.Limits.AuthWindow)),
		challenges: newAuthLimiter(challengesPerSource, challengeTTL)}
	id, err := ensureApplianceID(ctx, db)
	if err != nil {
		return nil, err
	}
	a.id = id
	if a.requestIDKey, err = ensureRequestIDKey(ctx, db); err != nil {
		return nil, err
	}
	ik, err := ensureImportKey(ctx, mod, db)
	if err != nil {
		return nil, err
	}
	a.importKey = ik
	if a.auditKey, err = ensureAuditKey(ctx, mod, db); err != nil {
		return nil, err
	}
	a.initCheckpoints()
	// At start-up an embedded (SQLite) store belongs to this appliance
	// alone and nothing of it is in flight: repair everything at once. A
	// shared store may hold other appliances' live work: only stale items.
	startup := staleAfter
	if cfg.Store.Driver == "sqlite" {
		startup = 0
	}
	if err := a.reconcile(ctx, startup); err != nil {
		return nil, err
	}
	if err := a.ensureQuorum(ctx); err != nil {
		return nil, err
	}
	if err := a.checkQuorumReachable(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

// ErrQuorumUnreachable refuses to start an appliance whose quorum is more
// than the officers who could approve: no ceremony could ever pass.
var ErrQuorumUnreachable = errors.New("the quorum is larger than the number of active officers")

// checkQuorumReachable refuses a quorum that the active officers cannot
// meet. An appliance with no officer yet starts (its officers are
// bootstrapped next), and says so.
func (a *Appliance) checkQuorumReachable(ctx context.Context) error {
	var n, q int
	if err := a.db.View(ctx, func(tx *store.Tx) error {
		var err error
		if q, err = quorumIn(tx); err != nil {
			return err
		}
		n, err = tx.CountActiveOfficers()
		return err
	}); err != nil {
		return err
	}
	switch {
	case n == 0:
		if !a.cfg.Dev { // a dev appliance enrols its demo officer next (EnsureDemo)
			a.log.Warn("no officer with a key yet: bootstrap the officers (keyrackd -bootstrap-officers NAME=KEY.pub,...)")
		}
	case n < q:
		return fmt.Errorf("%w: quorum %d, %d active officers with keys", ErrQuorumUnreachable, q, n)
	}
	return nil
}

// Config is the configuration the appliance runs under.
func (a *Appliance) Config() Config { return a.cfg }

// Log is the appliance's logger, for the front ends.
func (a *Appliance) Log() *slog.Logger { return a.log }

// Metrics is the registry of the appliance's Prometheus series. A front
// end adds its own and serves them all from it.
func (a *Appliance) Metrics() *prometheus.Registry { return a.metrics.reg }

// Health is what the health check found.
type Health struct {
	Body wire.Health
	// Up: the token answers, we are logged in, and the store takes writes.
	Up bool
	// RetryAfter > 0 when it is worth asking again: a token comes back by
	// itself; a failed store takes a restart, after an operator has looked
	// at the disk.
	RetryAfter time.Duration
}

// Health checks the token (for at most the configured health timeout) and
// the store.
func (a *Appliance) Health(ctx context.Context) Health {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(a.cfg.HealthTimeout))
	defer cancel()
	st := a.mod.Check(ctx)
	h := Health{Body: wire.Health{Status: "ok", Reason: "ok", Version: wire.Version, Store: "ok", Token: wire.TokenStatus{
		Up: st.Up, Label: st.Label, Serial: st.Serial, Manufacturer: st.Manufacturer, Model: st.Model,
		Sessions: st.Sessions, InUse: st.InUse, Recoveries: st.Recoveries, Error: st.Error, CheckedAt: st.CheckedAt}}}
	storeErr := a.db.Err()
	if storeErr != nil {
		h.Body.Store = storeErr.Error()
	}
	if st.Up && storeErr == nil {
		h.Up = true
		return h
	}
	h.Body.Status = "unavailable"
	if storeErr == nil {
		h.Body.Reason = "token-unavailable"
		h.RetryAfter = 5 * time.Second
	} else {
		h.Body.Reason = "store-failed"
	}
	return h
}

// staleAfter is how long a ceremony step or a serial reservation may stay
// pending before it is taken for interrupted: far longer than any live one
// (key generation takes seconds, a signature milliseconds).
const staleAfter = 10 * time.Minute

// RunJanitor works once a minute until ctx is done: it deletes request-ids
// that expired unused, and repairs work interrupted by a crash (of this or
// another appliance sharing the store) once it is stale.
func (a *Appliance) RunJanitor(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.PurgeRequestIDs(ctx)
			a.flushLoginFailures(ctx)
			a.flushSigningRefusals(ctx)
			if err := a.db.UpdateUnsynced(ctx, func(tx *store.Tx) error { return tx.PurgeLogins(time.Now()) }); err != nil {
				a.log.Warn("purging expired officer sessions and challenges", "err", err)
			}
			if err := a.reconcile(ctx, staleAfter); err != nil {
				a.log.Warn("reconciling interrupted work", "err", err)
			}
		}
	}
}

// PurgeRequestIDs deletes the used request-ids that have expired.
func (a *Appliance) PurgeRequestIDs(ctx context.Context) {
	var n int64
	err := a.db.Update(ctx, func(tx *store.Tx) error {
		var err error
		n, err = tx.PurgeNonces(time.Now())
		return err
	})
	if err != nil {
		a.log.Warn("purging expired request-ids", "err", err)
		return
	}
	if n > 0 {
		a.log.Debug("purged expired request-ids", "rows", n)
	}
}
