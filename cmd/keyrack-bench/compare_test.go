package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRoundSetsOrder: between raw rounds each daemon runs once, the two
// swapping places every round, so that neither always follows raw; each
// round is paired with the raw rounds around it.
func TestRoundSetsOrder(t *testing.T) {
	var order []string
	step := func(name string, ok int) func(time.Duration) result {
		return func(time.Duration) result { order = append(order, name); return rate(ok) }
	}
	raws := 0
	raw := func(time.Duration) result { order = append(order, "raw"); raws++; return rate(100 * raws) }
	sets, err := runRoundSets(3, time.Millisecond, raw, step("A", 60), step("B", 90))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"raw", "A", "B", "raw", "B", "A", "raw", "A", "B", "raw"}
	if !slices.Equal(order, want) {
		t.Errorf("rounds ran as %v, want %v", order, want)
	}
	if len(sets) != 2 || len(sets[0]) != 3 || len(sets[1]) != 3 {
		t.Fatalf("sets of %d rounds", len(sets))
	}
	// Round 2 (index 1) sits between the second and third raw rounds.
	if p := sets[1][1]; p.rawBefore.ok != 200 || p.rawAfter.ok != 300 || p.e2e.ok != 90 || p.ratio() != 90.0/250 {
		t.Errorf("B's second round: raw %d/%d, e2e %d, ratio %v", p.rawBefore.ok, p.rawAfter.ok, p.e2e.ok, p.ratio())
	}
	if got := roundOrder(4, 3); !slices.Equal(got, []int{1, 2, 0}) {
		t.Errorf("roundOrder(4, 3) = %v", got)
	}
}

// TestCompareStats: per-binary medians over the rounds, the after/before
// throughput of each round, the CPU per serial of the token-process
// windows, and the summary line, with na where the windows did not run.
func TestCompareStats(t *testing.T) {
	pair := func(raw, e2e int, p99 time.Duration) roundPair {
		r := rate(e2e)
		r.lat = []time.Duration{p99}
		return roundPair{rawBefore: rate(raw), rawAfter: rate(raw), e2e: r}
	}
	b := []roundPair{pair(400, 300, 10*time.Millisecond), pair(500, 300, 12*time.Millisecond), pair(400, 200, 30*time.Millisecond)}
	a := []roundPair{pair(400, 330, 9*time.Millisecond), pair(500, 360, 11*time.Millisecond), pair(400, 200, 8*time.Millisecond)}
	s := roundStats([2][]roundPair{b, a})
	if s.rounds != 3 || s.serialPerS != [2]float64{300, 330} || s.p99MS != [2]float64{12, 9} {
		t.Errorf("rounds %d, serials/s %v, p99 %v", s.rounds, s.serialPerS, s.p99MS)
	}
	if s.ratio != [2]float64{0.6, 0.72} {
		t.Errorf("ratios %v, want [0.6 0.72]", s.ratio)
	}
	// after/before per round: 1.1, 1.2, 1.0.
	if d := s.speedup - 1.1; d > 1e-9 || d < -1e-9 || s.speedupLo != 1 || s.speedupHi-1.2 > 1e-9 {
		t.Errorf("after/before %v (%v-%v), want 1.1 (1-1.2)", s.speedup, s.speedupLo, s.speedupHi)
	}
	line := s.line()
	if !strings.HasPrefix(line, "compare before_serial_per_s=300.0 after_serial_per_s=330.0 after_over_before=1.100 ") ||
		!strings.Contains(line, " before_appliance_cpu_ms_per_serial=na ") || !strings.HasSuffix(line, " cpu_after_over_before=na") {
		t.Errorf("line without windows: %s", line)
	}

	win := func(ok int, daemon, token time.Duration) remoteResult {
		return remoteResult{e2e: rate(ok), daemonCPU: daemon, tokenCPU: token, signs: float64(ok)}
	}
	s.addWindows([2][]remoteResult{
		{win(100, 200*time.Millisecond, 400*time.Millisecond), win(100, 180*time.Millisecond, 400*time.Millisecond)},
		{win(100, 150*time.Millisecond, 400*time.Millisecond), win(100, 170*time.Millisecond, 400*time.Millisecond)},
	})
	for _, want := range []string{" before_appliance_cpu_ms_per_serial=1.90 ", " after_appliance_cpu_ms_per_serial=1.60 ",
		" before_appliance_cpu_ratio=0.475 ", " after_appliance_cpu_ratio=0.400 "} {
		if !strings.Contains(s.line(), want) {
			t.Errorf("line %s lacks %q", s.line(), want)
		}
	}
	if !strings.HasSuffix(s.line(), " cpu_after_over_before=0.842") {
		t.Errorf("line %s: cpu after/before not 1.6/1.9", s.line())
	}
}
