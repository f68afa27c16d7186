package main

import (
	"fmt"
	"slices"
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
	rs := make([]float64, len(pairs))
	for i, p := range pairs {
		rs[i] = p.ratio()
	}
	return medianRange(rs)
}

// medianRange is the median, least and greatest of xs (zeros if empty);
// an even count gives the mean of the middle two.
func medianRange(xs []float64) (median, lo, hi float64) {
	if len(xs) == 0 {
		return 0, 0, 0
	}
	rs := slices.Clone(xs)
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
	sets, err := runRoundSets(n, d, raw, e2e)
	if err != nil {
		return nil, err
	}
	return sets[0], nil
}

// runRoundSets is runRounds for several end-to-end measurements (two
// daemons, in the comparison): between raw rounds, each of e2e runs once,
// in roundOrder's order, so that none of them is always the one right
// after raw:
//
//	raw0 A0 B0 raw1 B1 A1 raw2 A2 B2 raw3 ...
//
// sets[k] pairs e2e[k]'s rounds with the raw rounds around them.
func runRoundSets(n int, d time.Duration, raw func(time.Duration) result, e2e ...func(time.Duration) result) ([][]roundPair, error) {
	raws := []result{raw(d)}
	e2es := make([][]result, len(e2e))
	for i := range n {
		for _, k := range roundOrder(i, len(e2e)) {
			e2es[k] = append(e2es[k], e2e[k](d))
		}
		raws = append(raws, raw(d))
	}
	sets := make([][]roundPair, len(e2e))
	for k := range e2e {
		var err error
		if sets[k], err = pairRounds(raws, e2es[k]); err != nil {
			return nil, err
		}
	}
	return sets, nil
}

// roundOrder is the order in which k measurements run in round i: turned
// by one place each round, so that over k rounds each comes first (right
// after the raw round) once, and a drift within a round favours none.
func roundOrder(i, k int) []int {
	out := make([]int, k)
	for j := range out {
		out[j] = (i + j) % k
	}
	return out
}
