package appliance

import (
	"context"
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/policy"
)

// A signature refused because the officers stopped its key (disabled,
// frozen, destroyed) or its client (revoked) is what an officer watching
// the appliance must see: a line still asking after a freeze, or a
// revoked credential still in use somewhere. Each such refusal counts in
// keyrack_signing_refusals_total by rule, and is audited the way failed
// logins are (loginfail.go): the first refusal of a key or client in a
// window is an audit event at once, the rest of that window's refusals of
// it are one event, with their count, when the window ends (the
// janitor's round). A line retrying as fast as it can so adds at most two
// events per stopped key or client and window to the chain.

// The rules of signing refusals: the metric's labels, and the audit
// events' results.
const (
	// ruleKeyDisabled: the key is disabled, by a key.disable ceremony or
	// a freeze (the store keeps one state for both; the audit chain says
	// which stopped it).
	ruleKeyDisabled = "key-disabled"
	// ruleKeyDestroyed: the key is gone from the token.
	ruleKeyDestroyed = "key-destroyed"
	// ruleKeyNotActive: a key still being made, or whose ceremony failed.
	ruleKeyNotActive = "key-not-active"
	// ruleClientRevoked: the client's own, correct API key, revoked.
	ruleClientRevoked = "client-revoked"
)

var signingRefusalRules = []string{ruleKeyDisabled, ruleKeyDestroyed, ruleKeyNotActive, ruleClientRevoked}

func newSigningRefusalsMetric() *prometheus.CounterVec {
	m := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyrack_signing_refusals_total",
		Help: "Signing requests refused, or signatures discarded, because officers stopped the key (key-disabled: disabled or frozen; key-destroyed; key-not-active) or revoked the client (client-revoked), by rule.",
	}, []string{"rule"})
	for _, r := range signingRefusalRules {
		m.WithLabelValues(r)
	}
	return m
}

// keyStateRule is the rule refusing a signature by a key in state st.
func keyStateRule(st store.KeyState) string {
	switch st {
	case store.KeyDisabled:
		return ruleKeyDisabled
	case store.KeyDestroyed:
		return ruleKeyDestroyed
	default:
		return ruleKeyNotActive
	}
}

// maxRefusalSubjects bounds the keys and clients counted in one window;
// refusals of any beyond it are counted under "other". Keys and clients
// are made by officers, and a revoked client's refusal needs its real
// API key, so a caller cannot make up new subjects; the bound is for
// safety only.
const maxRefusalSubjects = 1024

// signingRefusals holds the window's counts, by rule and subject (the
// key's or the client's name).
type signingRefusals struct {
	mu     sync.Mutex
	counts map[refusalSubject]*refusalCount
}

type refusalSubject struct{ rule, name string }

type refusalCount struct {
	more    int // refusals after the first, not yet audited
	clients map[string]bool
	types   map[string]bool
	sources map[string]bool
}

// signingRefused counts a refusal by rule of subject (a key name, or the
// client's for client-revoked) asked by client for a signature of type t
// ("" when not known yet) from source ("" when not known), and audits it
// at once when it is the subject's first in the window.
func (a *Appliance) signingRefused(ctx context.Context, rule, subject, client string, t policy.AssertionType, source string) {
	a.metrics.signRefusals.WithLabelValues(rule).Inc()
	sr := &a.signRefusals
	sr.mu.Lock()
	if sr.counts == nil {
		sr.counts = map[refusalSubject]*refusalCount{}
	}
	k := refusalSubject{rule, subject}
	if _, ok := sr.counts[k]; !ok && len(sr.counts) >= maxRefusalSubjects {
		k.name = "other"
	}
	c, seen := sr.counts[k]
	if !seen {
		c = &refusalCount{clients: map[string]bool{}, types: map[string]bool{}, sources: map[string]bool{}}
		sr.counts[k] = c
	} else {
		c.more++
		addBounded(c.clients, client, 32)
		addBounded(c.types, string(t), 8)
		addBounded(c.sources, source, 8)
	}
	sr.mu.Unlock()
	if seen {
		return
	}
	details := map[string]any{"rule": rule, "client": client}
	if t != "" {
		details["type"] = string(t)
	}
	if source != "" {
		details["source"] = source
	}
	err := a.db.Update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		_, err := tx.Audit("client:"+client, "signing.refused", k.name, "refused: "+rule, details)
		return err
	})
	if err != nil {
		a.log.Warn("auditing a signing refusal", "rule", rule, "err", err)
	}
}

func addBounded(m map[string]bool, v string, max int) {
	if v != "" && len(m) < max {
		m[v] = true
	}
}

// flushSigningRefusals audits, for each key and client, the refusals
// after its first in the window that ended, as one event with their
// count, and starts a new window.
func (a *Appliance) flushSigningRefusals(ctx context.Context) {
	a.signRefusals.mu.Lock()
	counts := a.signRefusals.counts
	a.signRefusals.counts = nil
	a.signRefusals.mu.Unlock()
	subjects := make([]refusalSubject, 0, len(counts))
	for s, c := range counts {
		if c.more > 0 {
			subjects = append(subjects, s)
		}
	}
	if len(subjects) == 0 {
		return
	}
	sort.Slice(subjects, func(i, j int) bool {
		if subjects[i].rule != subjects[j].rule {
			return subjects[i].rule < subjects[j].rule
		}
		return subjects[i].name < subjects[j].name
	})
	err := a.db.Update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		for _, s := range subjects {
			c := counts[s]
			if _, err := tx.Audit("system", "signing.refused", s.name, "refused: "+s.rule,
				map[string]any{"rule": s.rule, "more_refusals": c.more, "clients": keys(c.clients), "types": keys(c.types),
					"sources": keys(c.sources)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		a.log.Warn("auditing signing refusals", "err", err)
	}
}

// FlushAuditAggregates ends the window of the aggregated audit events
// (failed logins, signing refusals): the counts after each source's, key's
// or client's first event are audited now, as the janitor does once a
// minute. A daemon stopping cleanly calls it so that a window's counts are
// not lost with the process.
func (a *Appliance) FlushAuditAggregates(ctx context.Context) {
	a.flushLoginFailures(ctx)
	a.flushSigningRefusals(ctx)
}
