package main

import (
	"context"
	"crypto"
	"crypto/sha512"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/hsm"
	"github.com/keyrack/keyrack/softhsm"
)

// The comparison (-compare BEFORE, with -keyrackd the build after a
// change). This host's speed drifts by 20% within minutes, so a before
// run and an after run taken one after the other compare the host as
// much as the builds. Here both daemons run at once, each on a dev dir
// it made itself (a fresh token, demo key, model and clients: an older
// build need not read a newer one's store), and are measured in turn:
//
//   - alternating rounds (runRoundSets) of raw signing on the after dev
//     dir's token and end to end through each daemon, the two end-to-end
//     rounds swapping places from round to round, so that neither is
//     always the one right after raw. Each round gives both daemons'
//     serials/s, p99 and ratio to the raw rounds around them, and the
//     after/before serials/s of that round: two measurements seconds
//     apart, the least the drift can touch;
//   - with the token out of process (startRemote: a p11-kit-server per
//     dev dir, both daemons up), windows of each in turn, the order
//     swapped every pair (before after, after before, ...: a drift that
//     is linear over the phase cancels, which strict before/after turns
//     would not), for each daemon's CPU per serial and its ratio to the
//     token's CPU per signature.
//
// Both daemons' devices have the same keys (keyPool.sibling), sent in the
// same order, so the two do the same work.

// Indexes of the two binaries in the comparison's arrays.
const (
	before = 0
	after  = 1
)

var compareNames = [2]string{"before", "after"}

type compareConfig struct {
	before, after string // the keyrackd binaries
	work          string // the bench's temporary directory
	devEdit       func(*appliance.Config)
	priority      string
	rounds        int
	roundDur      time.Duration
	roundConc     int
	remoteDur     time.Duration
	windows       int // token-process windows per binary
	p11Server     string
	p11Client     string
	primeCache    string
}

// compareDaemon is one of the two binaries, on its own dev dir and port.
type compareDaemon struct {
	name, bin, devDir, addr string
	d                       *daemonProc
	kp                      *keyPool
}

// compareStats are the comparison's figures, [before] and [after].
type compareStats struct {
	rounds     int
	serialPerS [2]float64 // medians over the rounds
	p99MS      [2]float64
	ratio      [2]float64 // median ratio to the raw rounds around
	// speedup is after's serials/s over before's, round by round:
	// median, least and greatest.
	speedup, speedupLo, speedupHi float64
	// With the token out of process (remote false: not measured):
	// medians over each binary's windows.
	remote   bool
	cpuMS    [2]float64 // keyrackd's CPU per serial
	cpuRatio [2]float64 // that over the token's CPU per signature
}

// roundStats fills the rounds' part of the figures from each binary's
// rounds (sets[before], sets[after], paired with the same raw rounds).
func roundStats(sets [2][]roundPair) compareStats {
	var s compareStats
	s.rounds = min(len(sets[before]), len(sets[after]))
	for k := range sets {
		var rates, p99s []float64
		for _, p := range sets[k] {
			rates = append(rates, p.e2e.perSecond())
			p99s = append(p99s, msFloat(p.e2e.quantile(.99)))
		}
		s.serialPerS[k], _, _ = medianRange(rates)
		s.p99MS[k], _, _ = medianRange(p99s)
		s.ratio[k], _, _ = ratioStats(sets[k])
	}
	var ups []float64
	for i := range s.rounds {
		if b := sets[before][i].e2e.perSecond(); b > 0 {
			ups = append(ups, sets[after][i].e2e.perSecond()/b)
		}
	}
	s.speedup, s.speedupLo, s.speedupHi = medianRange(ups)
	return s
}

// addWindows adds the token-out-of-process part of the figures.
func (s *compareStats) addWindows(ws [2][]remoteResult) {
	for k := range ws {
		var cpu, ratio []float64
		for _, w := range ws[k] {
			cpu = append(cpu, msFloat(w.perSerial()))
			ratio = append(ratio, w.ratio())
		}
		if len(cpu) == 0 {
			return
		}
		s.cpuMS[k], _, _ = medianRange(cpu)
		s.cpuRatio[k], _, _ = medianRange(ratio)
	}
	s.remote = s.cpuMS[before] > 0
}

// line is the comparison's summary line.
func (s compareStats) line() string {
	na := func(ok bool, format string, v float64) string {
		if !ok {
			return "na"
		}
		return fmt.Sprintf(format, v)
	}
	return fmt.Sprintf("compare before_serial_per_s=%.1f after_serial_per_s=%.1f after_over_before=%.3f after_over_before_min=%.3f after_over_before_max=%.3f"+
		" before_ratio=%.3f after_ratio=%.3f before_p99_ms=%.1f after_p99_ms=%.1f"+
		" before_appliance_cpu_ms_per_serial=%s after_appliance_cpu_ms_per_serial=%s before_appliance_cpu_ratio=%s after_appliance_cpu_ratio=%s cpu_after_over_before=%s",
		s.serialPerS[before], s.serialPerS[after], s.speedup, s.speedupLo, s.speedupHi,
		s.ratio[before], s.ratio[after], s.p99MS[before], s.p99MS[after],
		na(s.remote, "%.2f", s.cpuMS[before]), na(s.remote, "%.2f", s.cpuMS[after]),
		na(s.remote, "%.3f", s.cpuRatio[before]), na(s.remote, "%.3f", s.cpuRatio[after]),
		na(s.remote, "%.3f", s.cpuMS[after]/s.cpuMS[before]))
}

func msFloat(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// sibling is a pool of kp's primes for another daemon's model: its keys
// are kp's again, in the same order, as long as each of its takes follows
// kp's of the same size and catchUp. That is sound, each daemon having a
// store of its own, and fair: both check the same devices' keys.
func (kp *keyPool) sibling(assertion []byte) *keyPool {
	if !kp.loaded {
		kp.loaded = true
		kp.load()
	}
	return &keyPool{brand: kp.brand, model: kp.model, assertion: assertion, cache: kp.cache, loaded: true, primes: slices.Clone(kp.primes)}
}

// catchUp gives a sibling the primes src has made since, so that its next
// take needs none of its own (its primes are a prefix of src's as long as
// it never grew by itself).
func (kp *keyPool) catchUp(src *keyPool) {
	if len(src.primes) > len(kp.primes) {
		kp.primes = append(kp.primes, src.primes[len(kp.primes):]...)
	}
}

// binVersion is what a keyrackd binary says its version is.
func binVersion(bin string) string {
	out, err := exec.Command(bin, "-version").Output()
	if err != nil {
		return fmt.Sprintf("unknown (%v)", err)
	}
	return strings.TrimSpace(string(out))
}

// warmRequests is how many serials each daemon issues before anything is
// timed: its first requests pay for the token's sessions and each key's
// first self-check.
const warmRequests = 50

func runCompare(cc compareConfig) error {
	if cc.rounds < 1 || cc.windows < 1 {
		return fmt.Errorf("-compare needs -rounds and -token-process-windows of at least 1")
	}
	var ds [2]*compareDaemon
	for k, bin := range [2]string{cc.before, cc.after} {
		dir := filepath.Join(cc.work, compareNames[k])
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		// Each dev dir in a directory of its own, which also holds its
		// daemon's log and its token socket (startRemote).
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		ds[k] = &compareDaemon{name: compareNames[k], bin: bin, devDir: filepath.Join(dir, "dev"), addr: addr}
		fmt.Printf("compare: %-6s %s (version %s)\n", compareNames[k], bin, binVersion(bin))
		if err := makeDev(bin, ds[k].devDir, addr, cc.devEdit); err != nil {
			return fmt.Errorf("%s: %w", compareNames[k], err)
		}
	}
	fmt.Printf("keyrackd: token.signing_priority %q\n", cc.priority)

	// Raw signing on the after dev dir's token, as in the usual rounds.
	tok, err := softhsm.Load(filepath.Join(ds[after].devDir, "softhsm"), "keyrack-dev")
	if err != nil {
		return err
	}
	mod, err := hsm.Open(tok.Config())
	if err != nil {
		return err
	}
	defer mod.Close()
	key, err := mod.FindKeyByLabel(context.Background(), appliance.DemoKey)
	if err != nil {
		return err
	}
	sessions := mod.Sessions()
	digest := sha512.Sum512([]byte("keyrack-bench"))
	raw := func(d time.Duration) result {
		return timed("raw round", cc.roundConc, d, func() error {
			_, err := key.SignContext(context.Background(), digest[:], crypto.SHA512)
			return err
		})
	}
	// Raw signing bounds end to end (each serial is a signature on the
	// same token), so its rate sizes the requests to prepare.
	rawRate := raw(2 * time.Second).perSecond()
	if rawRate <= 0 {
		return fmt.Errorf("no raw signature in 2 s")
	}

	var pools [2]chan []byte
	for k, dm := range ds {
		if dm.d, err = startDaemon(dm.bin, dm.devDir, dm.addr); err != nil {
			return fmt.Errorf("%s: %w", dm.name, err)
		}
		defer dm.d.stop()
		cl, model, err := devClient(dm.devDir, dm.addr)
		if err != nil {
			return fmt.Errorf("%s: %w", dm.name, err)
		}
		if k == before {
			dm.kp = &keyPool{brand: appliance.DemoBrand, model: appliance.DemoModel, assertion: model, cache: cc.primeCache}
		} else {
			dm.kp = ds[before].kp.sibling(model)
		}
		// The same count as before's, for the same keys (sibling).
		reqs, err := serialRequests(cl, dm.kp, dm.addr, warmRequests+int(rawRate*cc.roundDur.Seconds()*float64(cc.rounds))+100)
		if err != nil {
			return fmt.Errorf("%s: %w", dm.name, err)
		}
		if w := replayPool(dm.addr, cc.roundConc, requestPool(reqs[:warmRequests]), time.Time{}, serialCheck); w.ok == 0 {
			return fmt.Errorf("%s: no serial issued in the warm-up (%d failed): %s", dm.name, w.other, logTail(dm.d.log, 0))
		}
		pools[k] = requestPool(reqs[warmRequests:])
	}
	e2e := func(k int) func(time.Duration) result {
		return func(d time.Duration) result {
			return replayPool(ds[k].addr, cc.roundConc, pools[k], time.Now().Add(d), serialCheck)
		}
	}
	sets, err := runRoundSets(cc.rounds, cc.roundDur, raw, e2e(before), e2e(after))
	mod.Close()
	if err != nil {
		return err
	}
	for _, dm := range ds {
		if err := dm.d.stop(); err != nil {
			return fmt.Errorf("%s keyrackd's shutdown: %w", dm.name, err)
		}
	}
	stats := roundStats([2][]roundPair{sets[before], sets[after]})

	fmt.Printf("\nalternating rounds at concurrency %d (%v each; raw, then before and after in turns; ratio: end to end over the mean of the raw rounds before and after it):\n", cc.roundConc, cc.roundDur)
	for i := range stats.rounds {
		order := roundOrder(i, 2)
		fmt.Printf("  round %d: raw %.1f/s", i+1, sets[before][i].rawBefore.perSecond())
		for _, k := range order {
			p := sets[k][i]
			fmt.Printf(", %s %.1f/s (p50 %s, p99 %s ms, %d 503s, ratio %.3f)", compareNames[k], p.e2e.perSecond(),
				ms(p.e2e.quantile(.5)), ms(p.e2e.quantile(.99)), p.e2e.busy, p.ratio())
		}
		fmt.Printf(", raw after %.1f/s; after/before %.3f\n", sets[before][i].rawAfter.perSecond(),
			sets[after][i].e2e.perSecond()/max(sets[before][i].e2e.perSecond(), 1e-9))
		for _, k := range order {
			p := sets[k][i]
			if p.e2e.other > 0 {
				fmt.Printf("  round %d: %d %s end-to-end failures\n", i+1, p.e2e.other, compareNames[k])
			}
			if p.e2e.elapsed < cc.roundDur/2 {
				fmt.Printf("  round %d: %s ran out of prepared requests after %v\n", i+1, compareNames[k], p.e2e.elapsed.Round(time.Millisecond))
			}
		}
	}
	for k := range sets {
		rates := make([]float64, len(sets[k]))
		p99s := make([]float64, len(sets[k]))
		for i, p := range sets[k] {
			rates[i], p99s[i] = p.e2e.perSecond(), msFloat(p.e2e.quantile(.99))
		}
		_, rlo, rhi := medianRange(rates)
		_, plo, phi := medianRange(p99s)
		_, qlo, qhi := ratioStats(sets[k])
		fmt.Printf("%-6s serials/s median %.1f (%.1f-%.1f), p99 median %.1f ms (%.1f-%.1f), ratio median %.3f (%.3f-%.3f)\n", compareNames[k],
			stats.serialPerS[k], rlo, rhi, stats.p99MS[k], plo, phi, stats.ratio[k], qlo, qhi)
	}
	fmt.Printf("after/before serials/s: median %.3f, range %.3f-%.3f over %d rounds\n", stats.speedup, stats.speedupLo, stats.speedupHi, stats.rounds)

	// The token out of process: both daemons up, each on its own
	// p11-kit-server, windows in turn.
	if cc.remoteDur <= 0 {
		fmt.Printf("\ntoken out of process: skipped: not run (-token-process-duration 0)\n")
	} else if ws, err := compareRemote(cc, ds, sessions, max(stats.serialPerS[before], stats.serialPerS[after])); err != nil {
		fmt.Printf("\ntoken out of process: skipped: %v\n", err)
	} else {
		stats.addWindows(ws)
		fmt.Printf("\ntoken out of process (p11-kit RPC, concurrency 8, %v windows in turn, the order swapped every pair):\n", cc.remoteDur)
		for i := range cc.windows {
			for _, k := range roundOrder(i, 2) {
				w := ws[k][i]
				fmt.Printf("  %-6s %.1f serials/s, p99 %s ms, %d 503s, %d failed; keyrackd %.2f ms CPU per serial, token %.2f ms per signature: ratio %.3f\n",
					compareNames[k], w.e2e.perSecond(), ms(w.e2e.quantile(.99)), w.e2e.busy, w.e2e.other,
					msFloat(w.perSerial()), msFloat(w.perSignature()), w.ratio())
			}
		}
		fmt.Printf("appliance CPU per serial (median of %d windows): before %.2f ms, after %.2f ms: after/before %.3f\n", cc.windows,
			stats.cpuMS[before], stats.cpuMS[after], stats.cpuMS[after]/stats.cpuMS[before])
	}

	fmt.Println()
	fmt.Println(stats.line())
	return nil
}

// compareRemote measures cc.windows windows of each daemon with the token
// out of process, in turn; rate estimates the serials per second, for the
// requests to prepare.
func compareRemote(cc compareConfig, ds [2]*compareDaemon, sessions int, rate float64) ([2][]remoteResult, error) {
	var ws [2][]remoteResult
	var rts [2]*remoteToken
	defer func() {
		for _, rt := range rts {
			if rt != nil {
				rt.close()
			}
		}
	}()
	for k, dm := range ds {
		tok, err := softhsm.Load(filepath.Join(dm.devDir, "softhsm"), "keyrack-dev")
		if err != nil {
			return ws, err
		}
		if k == after {
			dm.kp.catchUp(ds[before].kp)
		}
		rts[k], err = startRemote(remoteConfig{keyrackd: dm.bin, devDir: dm.devDir, addr: dm.addr, tok: tok,
			server: cc.p11Server, client: cc.p11Client, concurrency: 8, dur: cc.remoteDur, rate: rate,
			keys: dm.kp, sessions: sessions, windows: cc.windows})
		if err != nil {
			return ws, fmt.Errorf("%s: %w", dm.name, err)
		}
	}
	for i := range cc.windows {
		for _, k := range roundOrder(i, 2) {
			w, err := rts[k].window(cc.remoteDur)
			if err != nil {
				return ws, fmt.Errorf("%s, window %d: %w", ds[k].name, i+1, err)
			}
			ws[k] = append(ws[k], w)
		}
	}
	return ws, nil
}
