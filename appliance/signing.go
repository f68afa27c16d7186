package appliance

import (
	"context"
	"crypto/sha3"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/keyrack/keyrack/appliance/assertion"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/hsm"
	"github.com/keyrack/keyrack/policy"
)

// keyCache holds what never changes about a key once it is active: its
// compiled roles and its token handle (which recovers by itself); and,
// for a short time, API client records and what a request needs to find
// its key: the model's configuration, the key's record and a Signer for
// it. Those are read again after CacheTTL, or at once when this process
// changes any key, model or client (the store's configuration
// generation). On a store shared with other appliances, whose changes
// this process does not hear of, model/key bindings are not cached, so a
// model's configuration changed on one appliance applies on all at once.
// Whatever the cache holds, a signature leaves only if the transaction
// recording it finds the key active and the client not revoked
// (logAndAudit), so disabling a key or a client takes effect at once on
// every appliance.
type keyCache struct {
	mu      sync.Mutex
	roles   map[string]roles             // by key name
	keys    map[string]*hsm.Key          // by CKA_ID
	signers map[string]*assertion.Signer // by key id (sign-key-sha3-384)
	// models holds digests of model assertions whose signature verified
	// against a key of this appliance (bounded; cleared when full).
	models map[string]bool
	// bindings: by brand, model and assertion type (bounded; cleared
	// when full).
	bindings map[bindingKey]binding
	// clients: API clients by name (bounded; cleared when full).
	clients map[string]cachedClient
}

// CacheTTL bounds how long a cached model, key or client record is used.
// It matters only for changes made by another appliance sharing the store
// (this process's own changes clear the cache), and then only for
// refusals the record would cause before signing: the checks that decide
// whether a signature leaves are made in the recording transaction.
const CacheTTL = 2 * time.Second

// maxCachedConfig bounds the bindings and clients caches.
const maxCachedConfig = 4096

type bindingKey struct {
	brand, model string
	t            policy.AssertionType
}

type binding struct {
	mc  store.ModelConfig
	rec store.Key
	gen uint64
	at  time.Time
}

type cachedClient struct {
	client store.Client
	scope  *policy.ClientScope
	limits *policy.Limits
	gen    uint64
	at     time.Time
}

func (b binding) stamp() (uint64, time.Time)      { return b.gen, b.at }
func (c cachedClient) stamp() (uint64, time.Time) { return c.gen, c.at }

// cacheGet returns what m holds under k if it may still be used: cached
// under the store's current configuration generation, less than
// CacheTTL ago.
func cacheGet[K comparable, V interface{ stamp() (uint64, time.Time) }](a *Appliance, m map[K]V, k K, now time.Time) (V, bool) {
	a.cache.mu.Lock()
	v, ok := m[k]
	a.cache.mu.Unlock()
	if !ok {
		return v, false
	}
	gen, at := v.stamp()
	return v, gen == a.db.ConfigGeneration() && now.Sub(at) < CacheTTL
}

// cachePut stores v under k in m, which is emptied when full.
func cachePut[K comparable, V any](a *Appliance, m map[K]V, k K, v V) {
	a.cache.mu.Lock()
	defer a.cache.mu.Unlock()
	if len(m) >= maxCachedConfig {
		clear(m)
	}
	m[k] = v
}

const maxVerifiedModels = 1024

func (c *keyCache) modelVerified(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.models[id]
}

func (c *keyCache) rememberModel(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.models == nil || len(c.models) >= maxVerifiedModels {
		c.models = map[string]bool{}
	}
	c.models[id] = true
}

// signingKey is a key ready to sign one request.
type signingKey struct {
	rec    store.Key
	roles  roles
	signer *assertion.Signer
}

var errNoSuchModel = &Error{Kind: NotFound, Code: "model-not-set-up"}

// keyFor returns the key bound to sign type t for brand/model, asked by
// client, after checking the key is active and its roles allow headers.
func (a *Appliance) keyFor(ctx context.Context, client, brand, model string, t policy.AssertionType, headers map[string]any) (*signingKey, store.ModelConfig, error) {
	b, err := a.binding(ctx, brand, model, t)
	if err != nil {
		return nil, b.mc, err
	}
	mc, rec := b.mc, b.rec
	if rec.State != store.KeyActive {
		a.signingRefused(ctx, keyStateRule(rec.State), rec.Name, client, t, "")
		return nil, mc, &Error{Kind: Refused, Code: "key-not-active",
			Message: fmt.Sprintf("the %s key of model %s/%s is %s", t, brand, model, rec.State)}
	}
	r, err := a.cachedRoles(rec)
	if err != nil {
		return nil, mc, err
	}
	if err := r.scope.Check(t, headers); err != nil {
		a.metrics.refusals.WithLabelValues(refusalRule(err)).Inc()
		return nil, mc, err
	}
	hk, err := a.cachedTokenKey(ctx, rec)
	if err != nil {
		return nil, mc, err
	}
	// The Signer derives the key id and keeps the once-per-key part of the
	// self-check; a request rebinds it to the token key under its context.
	a.cache.mu.Lock()
	proto := a.cache.signers[rec.KeyID]
	a.cache.mu.Unlock()
	if proto == nil {
		if proto, err = assertion.NewSigner(hk); err != nil {
			return nil, mc, err
		}
		a.cache.mu.Lock()
		a.cache.signers[rec.KeyID] = proto
		a.cache.mu.Unlock()
	}
	signer, err := proto.Rebind(hk.WithContext(ctx))
	if err != nil {
		return nil, mc, err
	}
	return &signingKey{rec: rec, roles: r, signer: signer}, mc, nil
}

// binding returns the model configuration of brand/model and the record
// of its key for type t, cached (see keyCache).
func (a *Appliance) binding(ctx context.Context, brand, model string, t policy.AssertionType) (binding, error) {
	bk := bindingKey{brand, model, t}
	now := time.Now()
	shared := a.db.Shared()
	if b, ok := cacheGet(a, a.cache.bindings, bk, now); ok && !shared {
		return b, nil
	}
	// The generation is read before the records: a change committed in
	// between leaves the entry stale rather than wrong.
	b := binding{gen: a.db.ConfigGeneration(), at: now}
	err := a.db.View(ctx, func(tx *store.Tx) error {
		var err error
		if b.mc, err = tx.GetModel(brand, model); err != nil {
			return err
		}
		name, ok := b.mc.Keys[string(t)]
		if !ok {
			return &Error{Kind: Refused, Code: "no-key-for-type",
				Message: fmt.Sprintf("model %s/%s has no key bound for %s assertions", brand, model, t)}
		}
		b.rec, err = tx.GetKey(name)
		return err
	})
	if errors.Is(err, store.ErrNotFound) && b.mc.Brand == "" {
		e := *errNoSuchModel
		e.Message = fmt.Sprintf("model %s/%s is not set up on this appliance", brand, model)
		return b, &e
	}
	if err != nil {
		return b, err
	}
	if shared {
		return b, nil
	}
	cachePut(a, a.cache.bindings, bk, b)
	return b, nil
}

func refusalRule(err error) string {
	var r *policy.Refusal
	if errors.As(err, &r) {
		return r.Rule
	}
	return "other"
}

func (a *Appliance) cachedRoles(rec store.Key) (roles, error) {
	a.cache.mu.Lock()
	defer a.cache.mu.Unlock()
	if r, ok := a.cache.roles[rec.Name]; ok {
		return r, nil
	}
	r, err := parseRoles(json.RawMessage(rec.Roles))
	if err != nil {
		return roles{}, fmt.Errorf("key %q has unreadable roles: %w", rec.Name, err)
	}
	a.cache.roles[rec.Name] = r
	return r, nil
}

func (a *Appliance) cachedTokenKey(ctx context.Context, rec store.Key) (*hsm.Key, error) {
	id := hex.EncodeToString(rec.CKAID)
	a.cache.mu.Lock()
	hk, ok := a.cache.keys[id]
	a.cache.mu.Unlock()
	if ok {
		return hk, nil
	}
	hk, err := a.mod.FindKey(ctx, rec.CKAID)
	if err != nil {
		return nil, err
	}
	a.cache.mu.Lock()
	a.cache.keys[id] = hk
	a.cache.mu.Unlock()
	return hk, nil
}

// digest is what the signing log keeps of an assertion: SHA3-384 of its
// encoding, base64url like snapd's digests.
func digest(b []byte) string {
	sum := sha3.Sum384(b)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// logAndAudit records a released signature in the signing log and the
// audit chain, in one transaction, before the answer is sent.
func (a *Appliance) logAndAudit(tx *store.Tx, client string, t policy.AssertionType, k *signingKey, e store.LogEntry, signed []byte, extra map[string]any) error {
	// What was read before signing may be cached or out of date: the key
	// and the client are checked again here, where the record is written,
	// so nothing signed with a key disabled meanwhile, or for a client
	// revoked meanwhile, leaves.
	st, err := tx.KeyStateOf(k.rec.Name)
	if err != nil {
		return err
	}
	if st != store.KeyActive {
		// Counted, not audited here: the discarded signature is audited
		// on its own by the caller (each one is a signature the token made).
		a.metrics.signRefusals.WithLabelValues(keyStateRule(st)).Inc()
		return &discarded{reason: fmt.Sprintf("key %s became %s while signing", k.rec.Name, st),
			err: &Error{Kind: Refused, Code: "key-not-active",
				Message: fmt.Sprintf("key %s became %s while signing; the signature was discarded", k.rec.Name, st)}}
	}
	revoked, err := tx.ClientRevoked(client)
	if err != nil {
		return err
	}
	if revoked {
		a.metrics.signRefusals.WithLabelValues(ruleClientRevoked).Inc()
		return &discarded{reason: "client revoked while signing", err: errNoAPIKey}
	}
	e.Type, e.KeyID, e.Client, e.Digest = string(t), k.rec.KeyID, client, digest(signed)
	id, err := tx.LogSignature(e)
	if err != nil {
		return err
	}
	details := map[string]any{"log_id": id, "key_id": k.rec.KeyID, "digest": e.Digest}
	for k, v := range extra {
		details[k] = v
	}
	subject := e.Brand + "/" + e.Model
	if e.Serial != "" {
		subject += "/" + e.Serial
	}
	_, err = tx.Audit("client:"+client, string(t)+".sign", subject, "ok", details)
	return err
}

// discarded is a signature the transaction recording it refused to
// release. The client is answered with err; the audit chain records
// reason, since a signature the token made and nobody received is what
// an officer reviewing the chain must be able to see.
type discarded struct {
	reason string
	err    error
}

func (d *discarded) Error() string { return d.reason + "; the signature was discarded" }
func (d *discarded) Unwrap() error { return d.err }

// failureOutcome is the audit outcome of a signature that was not
// released because of err.
func failureOutcome(err error) string {
	var d *discarded
	if errors.As(err, &d) {
		return "discarded: " + d.reason
	}
	return "failed: " + AsError(err).Message
}

// signatureMade is what follows every answer of the token: the signature
// (or its failure) is counted, and the request gives up its place in the
// signing queue, so that recording and answering do not hold the token
// back from the next request.
func (a *Appliance) signatureMade(ctx context.Context, t policy.AssertionType, keyID string, err error) {
	result := "ok"
	if err != nil {
		result = AsError(err).Code
	}
	a.metrics.signatures.WithLabelValues(string(t), keyID, result).Inc()
	releasePlace(ctx)
}

func joinModels(ms []string) string { return strings.Join(ms, ",") }
