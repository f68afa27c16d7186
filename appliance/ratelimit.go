package appliance

import (
	"net"
	"strconv"
	"sync"
	"time"
)

// authLimiter counts authentication failures per key (a source: see
// sourceKey). Past limit failures in window, the key is blocked for
// window. Successes do not reset the count, so a caller holding one valid
// key cannot launder guesses for another between its own requests. It
// holds at most maxLimiterEntries keys.
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
	if len(l.entries) >= maxLimiterEntries {
		// Forget entries whose window and block are over; if every entry
		// is live, forget some anyway: memory stays bounded however many
		// sources are tried (a source forgotten starts its count afresh).
		for k, e := range l.entries {
			if now.Sub(e.windowStart) > l.window && now.After(e.blockedUntil) {
				delete(l.entries, k)
			}
		}
		for k := range l.entries {
			if len(l.entries) < maxLimiterEntries*9/10 {
				break
			}
			delete(l.entries, k)
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

// sourceKey is what failures are counted against for a source address: the
// address itself for IPv4, its /64 for IPv6 (one host commonly holds a
// whole /64, and could otherwise start afresh from each of its addresses).
func sourceKey(source string) string {
	ip := net.ParseIP(source)
	if ip == nil {
		return "addr:" + source
	}
	if v4 := ip.To4(); v4 != nil {
		return "addr:" + v4.String()
	}
	return "net:" + ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

func rateLimited(d time.Duration) *Error {
	secs := int(d.Seconds()) + 1
	return &Error{Kind: RateLimited, Code: "rate-limited", RetryAfter: time.Duration(secs) * time.Second,
		Message: "too many failed authentications from this address or for this name; retry in " + strconv.Itoa(secs) + "s"}
}
