package main

import (
	"fmt"
	"sort"
	"time"
)

// Alternating rounds. These machines change speed by 20% within minutes,
// so a ratio of two phases measured a minute apart says as much about the
// host's drift as about the appliance. The rounds interleave short raw
// and end-to-end measurements at one concurrency, raw first and last:
//
//	raw0 e2e0 raw1 e2e1 ... e2e(n-1) raw(n)
//
// and divide each end-to-end round by the mean of the raw rounds just
// before and after it, which cancels a drift that is roughly linear over
// the few seconds a pair takes. The median of those ratios resists a
// round disturbed by something else on the machine; their range says how
// far to trust it.

// roundPair is one end-to-end round and the raw rounds around it.
type roundPair struct {
	rawBefore, rawAfter, e2e result
}

// ratio is the round's end-to-end serials per second over the mean of
// the raw signatures per second around it (0 if a raw round did nothing).
func (p roundPair) ratio() float64 {
	raw := (p.rawBefore.perSecond() + p.rawAfter.perSecond()) / 2
	if raw <= 0 {
		return 0
	}
	return p.e2e.perSecond() / raw
}

// pairRounds makes the pairs of rounds measured as raw[0] e2e[0] raw[1]
// ... e2e[n-1] raw[n]; it needs len(raw) == len(e2e)+1.
func pairRounds(raw, e2e []result) ([]roundPair, error) {
	if len(raw) != len(e2e)+1 {
		return nil, fmt.Errorf("rounds: %d raw rounds around %d end-to-end rounds", len(raw), len(e2e))
	}
	out := make([]roundPair, len(e2e))
	for i := range e2e {
		out[i] = roundPair{rawBefore: raw[i], rawAfter: raw[i+1], e2e: e2e[i]}
	}
	return out, nil
}

// ratioStats is the median, least and greatest of the pairs' ratios. An
// even number of pairs gives the mean of the middle two.
func ratioStats(pairs []roundPair) (median, lo, hi float64) {
	if len(pairs) == 0 {
		return 0, 0, 0
	}
	rs := make([]float64, len(pairs))
	for i, p := range pairs {
		rs[i] = p.ratio()
	}
	sort.Float64s(rs)
	n := len(rs)
	median = rs[n/2]
	if n%2 == 0 {
		median = (rs[n/2-1] + rs[n/2]) / 2
	}
	return median, rs[0], rs[n-1]
}

// runRounds measures n end-to-end rounds between n+1 raw rounds, each of
// about d: raw(d) runs the raw signatures for d, e2e(d) the end-to-end
// serials.
func runRounds(n int, d time.Duration, raw, e2e func(time.Duration) result) ([]roundPair, error) {
	var raws, e2es []result
	raws = append(raws, raw(d))
	for range n {
		e2es = append(e2es, e2e(d))
		raws = append(raws, raw(d))
	}
	return pairRounds(raws, e2es)
}
