package appliance

import (
	"strconv"
	"sync"
	"time"
)

// authLimiter counts authentication failures per source address and per
// credential name. Past limit failures in window, the key is blocked for
// window: guessing API keys or officer credentials is throttled, per
// attacker address and per targeted name alike. Successes do not reset the
// count, so a caller holding one valid key cannot launder guesses for
// another between its own requests.
type authLimiter struct {
	limit  int
	window time.Duration

	mu      sync.Mutex
	entries map[string]*authEntry
}

type authEntry struct {
	fails        int
	windowStart  time.Time
	blockedUntil time.Time
}

const maxLimiterEntries = 100000

func newAuthLimiter(limit int, window time.Duration) *authLimiter {
	return &authLimiter{limit: limit, window: window, entries: map[string]*authEntry{}}
}

// blocked returns how long keys stay blocked (0 when none is).
func (l *authLimiter) blocked(now time.Time, keys ...string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var longest time.Duration
	for _, k := range keys {
		if e := l.entries[k]; e != nil && now.Before(e.blockedUntil) {
			longest = max(longest, e.blockedUntil.Sub(now))
		}
	}
	return longest
}

// fail records a failure for keys.
func (l *authLimiter) fail(now time.Time, keys ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.entries) > maxLimiterEntries {
		// Forget entries whose window and block are over: memory stays
		// bounded however many addresses or names are tried.
		for k, e := range l.entries {
			if now.Sub(e.windowStart) > l.window && now.After(e.blockedUntil) {
				delete(l.entries, k)
			}
		}
	}
	for _, k := range keys {
		e := l.entries[k]
		if e == nil || now.Sub(e.windowStart) > l.window {
			e = &authEntry{windowStart: now}
			l.entries[k] = e
		}
		e.fails++
		if e.fails >= l.limit {
			e.blockedUntil = now.Add(l.window)
		}
	}
}

func rateLimited(d time.Duration) *Error {
	secs := int(d.Seconds()) + 1
	return &Error{Kind: RateLimited, Code: "rate-limited", RetryAfter: time.Duration(secs) * time.Second,
		Message: "too many failed authentications from this address or for this name; retry in " + strconv.Itoa(secs) + "s"}
}
