package appliance

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/keyrack/keyrack/appliance/store"
)

// Failed officer logins are audited per source address and window: the
// first failure from a source in a window is an audit event at once, and
// the rest of that window's failures from it are one event when the window
// ends (the janitor's round). Guessing from many addresses, or a flood of
// bad session tokens, so adds at most two events per source and window to
// the chain, and the table of sources is bounded.

const loginFailWindow = time.Minute

// maxLoginFailSources bounds the sources counted in one window; failures
// from sources beyond it are counted under "other".
const maxLoginFailSources = 4096

type loginFails struct {
	mu      sync.Mutex
	window  time.Time
	sources map[string]*loginFailCount
}

type loginFailCount struct {
	more     int // failures after the first, not yet audited
	officers map[string]bool
	reasons  map[string]bool
}

// loginFailed counts a failed login (or a bad session token) from source
// for officer ("" when not known), and audits it at once when it is the
// source's first in the window.
func (a *Appliance) loginFailed(ctx context.Context, source, officer, reason string) {
	now := time.Now()
	a.loginFails.mu.Lock()
	lf := &a.loginFails
	if lf.sources == nil || now.Sub(lf.window) >= loginFailWindow {
		// A window left unflushed (no janitor round yet) is flushed by the
		// next round: keep counting into it until then.
		if lf.sources == nil {
			lf.sources, lf.window = map[string]*loginFailCount{}, now
		}
	}
	key := source
	if _, ok := lf.sources[key]; !ok && len(lf.sources) >= maxLoginFailSources {
		key = "other"
	}
	c, seen := lf.sources[key]
	if !seen {
		c = &loginFailCount{officers: map[string]bool{}, reasons: map[string]bool{}}
		lf.sources[key] = c
	} else {
		c.more++
		if officer != "" && len(c.officers) < 32 {
			c.officers[officer] = true
		}
		if len(c.reasons) < 8 {
			c.reasons[reason] = true
		}
	}
	lf.mu.Unlock()
	if !seen {
		a.refusal(ctx, "officer:"+defaultName(officer), "officer.login", officer, reason, source)
	}
}

// flushLoginFailures audits, for each source, the failures after its first
// in the window that ended, as one event, and starts a new window.
func (a *Appliance) flushLoginFailures(ctx context.Context) {
	a.loginFails.mu.Lock()
	sources := a.loginFails.sources
	a.loginFails.sources, a.loginFails.window = nil, time.Time{}
	a.loginFails.mu.Unlock()
	names := make([]string, 0, len(sources))
	for s, c := range sources {
		if c.more > 0 {
			names = append(names, s)
		}
	}
	if len(names) == 0 {
		return
	}
	sort.Strings(names)
	err := a.db.Update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		for _, s := range names {
			c := sources[s]
			if _, err := tx.Audit("system", "officer.login", s, "refused: failed logins",
				map[string]any{"source": s, "more_failures": c.more, "officers": keys(c.officers), "reasons": keys(c.reasons)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		a.log.Warn("auditing failed logins", "err", err)
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
