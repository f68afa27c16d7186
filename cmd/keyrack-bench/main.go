// Command keyrack-bench measures serial issuance against the token's own
// limit, in one run on one token:
//
//  1. raw: RSA-4096 signatures per second straight through package hsm;
//     then the same signatures behind a bare net/http handler over
//     loopback, the floor under any HTTP signing service on this machine;
//     then the least a durable serial service must do (intrinsicFloor);
//  2. Go crypto/rsa RSA-4096 in process (what a software-key vault does);
//  3. end to end: keyrackd (dev mode: SoftHSM, SQLite with fsync before
//     each answer) and devices simulated over loopback HTTP. Request-ids
//     and signed serial-requests are made before the timed phase, which
//     times only POST /v1/serial, at concurrency 1, 4, 8 and 32, each
//     from a simulated device key of its own (devkeys.go);
//  4. alternating rounds of raw signing and end to end at concurrency 8
//     (rounds.go), for a ratio a drifting host does not decide, and the
//     daemon's resident memory;
//  5. end to end with the token in its own process behind p11-kit's RPC
//     server, keyrackd's CPU and the token process's read apart
//     (remote.go), then the intrinsic floor of phase 1 served by a child
//     process of this bench on the same token server, its CPU read the
//     same way (floorproc.go); skipped, with the reason, if that does not
//     work.
//
// It prints a table, the rounds, then one line for concurrency 8:
//
//	serial_per_s=N raw_sign_per_s=N ratio=N ratio_min=N ratio_max=N p50_ms=N p99_ms=N rss_mib=N
//	appliance_cpu_ms_per_serial=N appliance_cpu_ratio=N floor_cpu_ms_per_serial=N floor_cpu_ratio=N
//
// (one line). serial_per_s, p50 and p99 are those of the concurrency-8
// phase, raw_sign_per_s the first raw phase's at its sessions; ratio is
// the median of the rounds' ratios, not serial_per_s over raw_sign_per_s.
//
// With -compare BEFORE it instead compares two keyrackd binaries, BEFORE
// and -keyrackd (after), measured in turn in alternating rounds and with
// the token out of process, and ends with one "compare ..." line
// (compare.go).
package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/device"
	"github.com/keyrack/keyrack/hsm"
	"github.com/keyrack/keyrack/softhsm"
)

func main() {
	if os.Getenv(floorChildEnv) != "" {
		os.Exit(floorChild())
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "keyrack-bench:", err)
		os.Exit(1)
	}
}

var retryPause *time.Duration

type result struct {
	name        string
	concurrency int
	// CPU time per successful request, of the daemon and of this load
	// generator, for the end-to-end phases.
	daemonCPU, clientCPU time.Duration
	// signCPU and ownCPU split daemonCPU between the token's signing
	// threads (at idle priority, the only SCHED_IDLE threads) and every
	// other thread: ownCPU is what the appliance itself spends per serial
	// (HTTP, checks, store, Go runtime), the cost the ratio goal is about.
	signCPU, ownCPU time.Duration
	// tokenBusy is the share of the phase the token's sessions spent
	// signing (from the daemon's keyrack_token_sign_duration_seconds).
	tokenBusy float64
	// signTime is the mean time of one signature inside the token.
	signTime time.Duration
	// commits is the store's write transactions per issued serial, syncs
	// its write-ahead log syncs (fsyncs) per serial.
	commits, syncs float64
	// gcPerSecond is the daemon's garbage collections per second.
	gcPerSecond float64
	// gcCPU is the garbage collector's CPU per serial, as the Go runtime
	// estimates it (an overestimate: compare runs, not with ownCPU).
	gcCPU time.Duration
	// stages are the daemon's own p99 of the parts of a serial it times
	// (bucket upper bounds of its histograms over the phase).
	stages   []stageP99
	ok, busy int
	other    int
	elapsed  time.Duration
	lat      []time.Duration
}

func (r result) perSecond() float64 { return float64(r.ok) / r.elapsed.Seconds() }

func (r result) quantile(q float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), r.lat...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64)
}

func run() error {
	keyrackd := flag.String("keyrackd", "bin/keyrackd", "the keyrackd binary to measure")
	dur := flag.Duration("duration", 5*time.Second, "length of each raw and in-process phase")
	perWorker := flag.Int("requests-per-worker", 50, "end-to-end requests per concurrent client (at least 200 a level)")
	levels := flag.String("concurrency", "1,4,8,32", "end-to-end concurrency levels")
	profile := flag.String("cpuprofile", "", "have keyrackd write a CPU profile of the end-to-end phase here")
	traceOut := flag.String("trace", "", "have keyrackd write a Go execution trace of the end-to-end phase here")
	queue := flag.Int("queue", -1, "set limits.queue (waiting places in all) in the dev configuration (-1: leave the default)")
	priority := flag.String("signing-priority", appliance.PriorityIdle, "token.signing_priority of the measured daemon: idle (what a SoftHSM appliance on a machine of its own should use) or normal")
	rounds := flag.Int("rounds", 5, "end-to-end rounds alternating with raw signing rounds, for the ratio (0: the ratio of the first raw phase and the concurrency-8 phase)")
	roundDur := flag.Duration("round-duration", 3*time.Second, "length of each alternating round")
	roundConc := flag.Int("round-concurrency", 8, "concurrency of the alternating rounds, raw and end to end")
	remoteDur := flag.Duration("token-process-duration", 5*time.Second, "length of the end-to-end window with the token in its own process behind p11-kit (0: skip that phase)")
	remoteProfile := flag.String("token-process-cpuprofile", "", "have keyrackd write a CPU profile of the phase with the token in its own process here")
	p11Server := flag.String("p11-kit-server", defaultP11KitServer, "p11-kit's RPC server, for the token out of process")
	p11Client := flag.String("p11-kit-client", defaultP11KitClient, "p11-kit's client module, loaded by keyrackd for the token out of process")
	primeCache := flag.String("prime-cache", defaultPrimeCache(), "file the simulated devices' primes are kept in from run to run (empty: make them every run)")
	retryPause = flag.Duration("retry-pause", 50*time.Millisecond, "pause before sending a request again after a 503")
	compare := flag.String("compare", "", "a keyrackd binary to compare -keyrackd with (before and after) in alternating rounds and token-process windows, instead of the usual phases (compare.go)")
	windows := flag.Int("token-process-windows", 2, "with -compare: windows of -token-process-duration per binary with the token out of process, taken in turn")
	flag.Parse()
	if *targetURL != "" { // another device service instead (target.go)
		return runTarget(*primeCache)
	}

	work, err := os.MkdirTemp("", "keyrack-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	devDir := filepath.Join(work, "dev")
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	fmt.Printf("keyrack-bench: %d CPUs, %s\n", runtime.NumCPU(), runtime.Version())
	devEdit := func(cfg *appliance.Config) {
		if *queue >= 0 {
			cfg.Limits.Queue, cfg.Limits.QueuePerSession = queue, nil
		}
		cfg.Token.SigningPriority = *priority
	}
	if *compare != "" {
		return runCompare(compareConfig{before: *compare, after: *keyrackd, work: work, devEdit: devEdit, priority: *priority,
			rounds: *rounds, roundDur: *roundDur, roundConc: *roundConc, remoteDur: *remoteDur, windows: *windows,
			p11Server: *p11Server, p11Client: *p11Client, primeCache: *primeCache})
	}

	if err := makeDev(*keyrackd, devDir, addr, devEdit); err != nil {
		return err
	}
	fmt.Printf("keyrackd: token.signing_priority %q\n", *priority)

	// 1. Raw token signatures, on the dev token and its demo key.
	tok, err := softhsm.Load(filepath.Join(devDir, "softhsm"), "keyrack-dev")
	if err != nil {
		return err
	}
	mod, err := hsm.Open(tok.Config())
	if err != nil {
		return err
	}
	key, err := mod.FindKeyByLabel(context.Background(), appliance.DemoKey)
	if err != nil {
		mod.Close()
		return err
	}
	devs, err := benchDevices(16, 4096)
	if err != nil {
		mod.Close()
		return err
	}
	digest := sha512.Sum512([]byte("keyrack-bench"))
	var results []result
	for _, c := range []int{1, mod.Sessions()} {
		results = append(results, timed(fmt.Sprintf("raw token RSA-4096 sign (%d sessions)", mod.Sessions()), c, *dur, func() error {
			_, err := key.SignContext(context.Background(), digest[:], crypto.SHA512)
			return err
		}))
	}
	sessions := mod.Sessions()

	// 1b. The floor under any HTTP signing service on this machine: a
	// bare net/http handler in this process that reads the body and has
	// the token sign its digest, no store, no checks, no admission limit.
	// What end to end loses beyond this is the appliance's own work.
	floor, err := httpFloor(key, sessions, func(c int) int { return max(200, c**perWorker) })
	if err != nil {
		mod.Close()
		return err
	}
	results = append(results, floor...)
	mod.Close()
	// 1c. The least any durable serial service must do per request, with
	// the token signing at the priority keyrackd is given.
	cfg := tok.Config()
	cfg.IdleSigning = *priority == appliance.PriorityIdle
	if mod, err = hsm.Open(cfg); err != nil {
		return err
	}
	if key, err = mod.FindKeyByLabel(context.Background(), appliance.DemoKey); err != nil {
		mod.Close()
		return err
	}
	streams, err := floorStreams(key, devs, max(200, 8**perWorker))
	if err != nil {
		mod.Close()
		return err
	}
	intrinsic, _, err := intrinsicFloor(key, 8, streams)
	mod.Close()
	if err != nil {
		return err
	}
	results = append(results, intrinsic)
	rawC1, rawFull := results[0], results[1]

	// 2. Go crypto/rsa in process.
	goKey, err := rsa.GenerateKey(rand.Reader, 4096)
	if err != nil {
		return err
	}
	results = append(results, timed("Go crypto/rsa RSA-4096 in process", sessions, *dur, func() error {
		_, err := rsa.SignPKCS1v15(nil, goKey, crypto.SHA512, digest[:])
		return err
	}))

	// 3. End to end.
	var extra []string
	if *profile != "" {
		abs, err := filepath.Abs(*profile)
		if err != nil {
			return err
		}
		extra = []string{"-cpuprofile", abs}
	}
	if *traceOut != "" {
		abs, err := filepath.Abs(*traceOut)
		if err != nil {
			return err
		}
		extra = append(extra, "-trace", abs)
	}
	d, err := startDaemon(*keyrackd, devDir, addr, extra...)
	if err != nil {
		return err
	}
	defer d.stop()
	cl, model, err := devClient(devDir, addr)
	if err != nil {
		return err
	}
	for _, dv := range devs {
		dv.ModelAssertion = model
	}
	kp := &keyPool{brand: appliance.DemoBrand, model: appliance.DemoModel, assertion: model, cache: *primeCache}
	var e2e1, e2e8 result
	for _, f := range strings.Split(*levels, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || c < 1 {
			return fmt.Errorf("bad concurrency %q", f)
		}
		reqs, err := serialRequests(cl, kp, addr, max(200, c**perWorker))
		if err != nil {
			return err
		}
		m0, err := daemonMetrics(addr)
		if err != nil {
			return err
		}
		d0, c0 := cpuTime(d.cmd.Process.Pid), cpuTime(os.Getpid())
		s0, o0 := threadCPU(d.cmd.Process.Pid)
		r := replay(addr, c, reqs)
		if r.ok > 0 {
			r.daemonCPU = (cpuTime(d.cmd.Process.Pid) - d0) / time.Duration(r.ok)
			r.clientCPU = (cpuTime(os.Getpid()) - c0) / time.Duration(r.ok)
			if s1, o1 := threadCPU(d.cmd.Process.Pid); s1 > s0 {
				r.signCPU = (s1 - s0) / time.Duration(r.ok)
				r.ownCPU = (o1 - o0) / time.Duration(r.ok)
			}
		}
		m1, err := daemonMetrics(addr)
		if err != nil {
			return err
		}
		delta := func(name string) (float64, bool) {
			a, ok0 := m0[name]
			b, ok1 := m1[name]
			return b - a, ok0 && ok1
		}
		if k, ok := delta(mSyncs); ok && r.ok > 0 {
			r.syncs = k / float64(r.ok)
		}
		if k, ok := delta(mCommits); ok && r.ok > 0 {
			r.commits = k / float64(r.ok)
		}
		if g, ok := delta(mGCs); ok {
			r.gcPerSecond = g / r.elapsed.Seconds()
		}
		if g, ok := delta(mGCCPU); ok && r.ok > 0 {
			r.gcCPU = time.Duration(g / float64(r.ok) * float64(time.Second))
		}
		if sum, ok := delta(mSignSum); ok {
			r.tokenBusy = sum / (r.elapsed.Seconds() * float64(sessions))
			if n, ok := delta(mSignCount); ok && n > 0 {
				r.signTime = time.Duration(sum / n * float64(time.Second))
			}
		}
		for _, st := range daemonStages {
			if v, ok := bucketQuantile(m0, m1, st.series, .99); ok {
				r.stages = append(r.stages, stageP99{st.name, v})
			}
		}
		r.name = "end to end POST /v1/serial"
		results = append(results, r)
		switch c {
		case 1:
			e2e1 = r
		case 8:
			e2e8 = r
		}
	}

	// 3b. Alternating rounds of raw signing (the first raw phase's token
	// configuration) and end to end at one concurrency, for a ratio that a
	// drifting host does not decide. Requests are prepared for all rounds
	// first, so that the rounds follow one another closely.
	var pairs []roundPair
	if *rounds > 0 {
		rate := e2e8.perSecond()
		if rate == 0 {
			rate = rawFull.perSecond()
		}
		reqs, err := serialRequests(cl, kp, addr, int(rate*roundDur.Seconds()*float64(*rounds)*1.2)+100)
		if err != nil {
			return err
		}
		pool := requestPool(reqs)
		if mod, err = hsm.Open(tok.Config()); err != nil {
			return err
		}
		if key, err = mod.FindKeyByLabel(context.Background(), appliance.DemoKey); err != nil {
			mod.Close()
			return err
		}
		pairs, err = runRounds(*rounds, *roundDur, func(d time.Duration) result {
			return timed("raw round", *roundConc, d, func() error {
				_, err := key.SignContext(context.Background(), digest[:], crypto.SHA512)
				return err
			})
		}, func(d time.Duration) result {
			return replayPool(addr, *roundConc, pool, time.Now().Add(d), serialCheck)
		})
		mod.Close()
		if err != nil {
			return err
		}
	}

	// 4. Memory.
	rss, err := rssMiB(d.cmd.Process.Pid)
	if err != nil {
		return err
	}
	if err := d.stop(); err != nil {
		return fmt.Errorf("keyrackd's shutdown: %w", err)
	}

	// 5. The token in its own process (remote.go).
	var remote remoteResult
	remoteErr := errors.New("not run (-token-process-duration 0)")
	if *remoteDur > 0 {
		var prof string
		if *remoteProfile != "" {
			if prof, err = filepath.Abs(*remoteProfile); err != nil {
				return err
			}
		}
		rate := e2e8.perSecond()
		if rate == 0 {
			rate = rawFull.perSecond()
		}
		remote, remoteErr = remotePhase(remoteConfig{keyrackd: *keyrackd, devDir: devDir, addr: addr, tok: tok,
			server: *p11Server, client: *p11Client, concurrency: 8, dur: *remoteDur, rate: rate, profile: prof,
			keys: kp, sessions: sessions, floorStreams: streams})
		if remoteErr == nil {
			results = append(results, remote.e2e)
		}
	}

	fmt.Printf("\n%-44s %5s %9s %8s %8s %7s %6s %10s %10s %6s %8s %8s %5s\n", "phase", "conc", "ok/s", "p50 ms", "p99 ms", "503s", "other", "daemon ms", "client ms", "token", "sign ms", "commits", "GC/s")
	for _, r := range results {
		cpu := func(d time.Duration) string {
			if d == 0 {
				return "-"
			}
			return ms(d)
		}
		busy := "-"
		if r.tokenBusy > 0 {
			busy = fmt.Sprintf("%.0f%%", 100*r.tokenBusy)
		}
		commits := "-"
		if r.commits > 0 {
			commits = fmt.Sprintf("%.2f", r.commits)
		}
		gcs := "-"
		if r.gcPerSecond > 0 {
			gcs = fmt.Sprintf("%.1f", r.gcPerSecond)
		}
		fmt.Printf("%-44s %5d %9.1f %8s %8s %7d %6d %10s %10s %6s %8s %8s %5s\n", r.name, r.concurrency, r.perSecond(), ms(r.quantile(.5)), ms(r.quantile(.99)),
			r.busy, r.other, cpu(r.daemonCPU), cpu(r.clientCPU), busy, cpu(r.signTime), commits, gcs)
	}
	fmt.Printf("(daemon ms, client ms: CPU time per issued serial; a raw token signature costs %s ms of CPU at %d sessions.\n"+
		" token: share of the phase the %d sessions spent signing; sign ms: mean time of one signature inside the token;\n"+
		" commits: store write transactions per serial; GC/s: the daemon's garbage collections per second)\n",
		ms(time.Duration(float64(runtime.NumCPU())*float64(time.Second)/rawFull.perSecond())), sessions, sessions)
	if e2e8.signCPU > 0 {
		fmt.Printf("\nCPU per serial at concurrency 8: signing threads %.2f ms, the rest of the daemon %.2f ms (its own work: HTTP, checks, store, runtime)",
			float64(e2e8.signCPU.Microseconds())/1000, float64(e2e8.ownCPU.Microseconds())/1000)
		if e2e8.gcCPU > 0 {
			fmt.Printf("; GC by the runtime's estimate %.2f ms", float64(e2e8.gcCPU.Microseconds())/1000)
		}
		fmt.Println()
	}
	if e2e8.syncs > 0 {
		fmt.Printf("store at concurrency 8: %.2f commits and %.2f write-ahead log syncs per serial\n", e2e8.commits, e2e8.syncs)
	}
	fmt.Printf("\nlatency at concurrency 8: p50 %s, p90 %s, p95 %s, p99 %s, max %s ms\n", ms(e2e8.quantile(.5)), ms(e2e8.quantile(.9)),
		ms(e2e8.quantile(.95)), ms(e2e8.quantile(.99)), ms(e2e8.quantile(1)))
	if len(e2e8.stages) > 0 {
		fmt.Printf("daemon's own p99 at concurrency 8 (histogram bucket bounds):")
		for i, st := range e2e8.stages {
			sep := ","
			if i == 0 {
				sep = ""
			}
			fmt.Printf("%s %s <= %s ms", sep, st.name, strconv.FormatFloat(st.le*1000, 'f', -1, 64))
		}
		fmt.Println()
	}
	fmt.Printf("\nsingle token signature at concurrency 1: p50 %s ms; p99 at concurrency 8 is %.1fx that\n",
		ms(rawC1.quantile(.5)), float64(e2e8.quantile(.99))/float64(rawC1.quantile(.5)))
	if e2e1.ok > 0 {
		fmt.Printf("one serial alone (end to end, concurrency 1): p50 %s ms; p99 at concurrency 8 is %.1fx that\n",
			ms(e2e1.quantile(.5)), float64(e2e8.quantile(.99))/float64(e2e1.quantile(.5)))
	}
	fmt.Printf("daemon resident memory: %.1f MiB\n\n", rss)
	fmt.Printf("intrinsic work only at concurrency 8 (decode, device signature, token sign + self-check, one durable\n"+
		" signing-log row, HTTP; nothing else of keyrackd's): %.1f/s, %.3f of raw; end to end is %.3f of it\n",
		intrinsic.perSecond(), intrinsic.perSecond()/rawFull.perSecond(), e2e8.perSecond()/intrinsic.perSecond())
	if intrinsic.signCPU > 0 && e2e8.signCPU > 0 {
		fmt.Printf("CPU per serial besides signing: intrinsic %.2f ms (its clients included), end to end %.2f ms (daemon %.2f + clients %.2f)\n",
			float64(intrinsic.ownCPU.Microseconds())/1000, float64((e2e8.ownCPU+e2e8.clientCPU).Microseconds())/1000,
			float64(e2e8.ownCPU.Microseconds())/1000, float64(e2e8.clientCPU.Microseconds())/1000)
	}

	ratio, ratioMin, ratioMax := e2e8.perSecond()/rawFull.perSecond(), "na", "na"
	if len(pairs) > 0 {
		var lo, hi float64
		ratio, lo, hi = ratioStats(pairs)
		ratioMin, ratioMax = fmt.Sprintf("%.3f", lo), fmt.Sprintf("%.3f", hi)
		fmt.Printf("\nalternating rounds at concurrency %d (%v each; ratio: end to end over the mean of the raw rounds before and after it):\n", *roundConc, *roundDur)
		for i, p := range pairs {
			fmt.Printf("  round %d: raw %.1f/s, end to end %.1f/s (p50 %s, p99 %s ms, %d 503s), raw after %.1f/s, ratio %.3f\n", i+1,
				p.rawBefore.perSecond(), p.e2e.perSecond(), ms(p.e2e.quantile(.5)), ms(p.e2e.quantile(.99)), p.e2e.busy, p.rawAfter.perSecond(), p.ratio())
			if p.e2e.other > 0 || p.rawBefore.other > 0 {
				fmt.Printf("  round %d: %d end-to-end and %d raw failures\n", i+1, p.e2e.other, p.rawBefore.other)
			}
			if p.e2e.elapsed < *roundDur/2 {
				fmt.Printf("  round %d ran out of prepared requests after %v\n", i+1, p.e2e.elapsed.Round(time.Millisecond))
			}
		}
		fmt.Printf("ratio: median %.3f, range %s-%s over %d rounds\n", ratio, ratioMin, ratioMax, len(pairs))
	}

	appMS, appRatio := "na", "na"
	if remoteErr != nil {
		fmt.Printf("\ntoken out of process: skipped: %v\n", remoteErr)
	} else {
		r := remote.e2e
		appMS, appRatio = fmt.Sprintf("%.2f", float64(remote.perSerial().Microseconds())/1000), fmt.Sprintf("%.3f", remote.ratio())
		fmt.Printf("\ntoken out of process (p11-kit RPC, concurrency 8, %v): %.1f serials/s, p50 %s, p99 %s ms, %d 503s, %d failed;\n"+
			" signatures %.0f, %s ms each as keyrackd sees them, sessions %.0f%% busy;\n"+
			" CPU: keyrackd %.2f ms per serial, token process %.2f ms per signature: ratio %s\n",
			r.elapsed.Round(time.Millisecond), r.perSecond(), ms(r.quantile(.5)), ms(r.quantile(.99)), r.busy, r.other,
			remote.signs, ms(remote.signTime), 100*remote.tokenBusy,
			float64(remote.perSerial().Microseconds())/1000, float64(remote.perSignature().Microseconds())/1000, appRatio)
	}
	floorMS, floorRatio := "na", "na"
	if f := remote.floor; remoteErr == nil && f != nil && f.skipped != nil {
		fmt.Printf("intrinsic work only, token out of process: skipped: %v\n", f.skipped)
	} else if remoteErr == nil && f != nil {
		floorMS, floorRatio = fmt.Sprintf("%.2f", float64(f.perSerial().Microseconds())/1000), fmt.Sprintf("%.3f", f.ratio())
		fmt.Printf("intrinsic work only, token out of process (same token server, its own process, %v): %.1f serials/s, p99 %s ms, %d rows;\n"+
			" CPU: the floor's process %s ms per serial, token process %.2f ms per signature: ratio %s (keyrackd's over it: %.2f)\n",
			f.e2e.elapsed.Round(time.Millisecond), f.e2e.perSecond(), ms(f.e2e.quantile(.99)), f.rows, floorMS,
			float64(f.perSignature().Microseconds())/1000, floorRatio, remote.ratio()/f.ratio())
	}

	fmt.Println()
	fmt.Printf("serial_per_s=%.1f raw_sign_per_s=%.1f ratio=%.3f ratio_min=%s ratio_max=%s p50_ms=%s p99_ms=%s rss_mib=%.1f appliance_cpu_ms_per_serial=%s appliance_cpu_ratio=%s floor_cpu_ms_per_serial=%s floor_cpu_ratio=%s\n",
		e2e8.perSecond(), rawFull.perSecond(), ratio, ratioMin, ratioMax, ms(e2e8.quantile(.5)), ms(e2e8.quantile(.99)), rss, appMS, appRatio, floorMS, floorRatio)
	return nil
}

// timed runs fn from c goroutines for d and collects latencies.
func timed(name string, c int, d time.Duration, fn func() error) result {
	r := result{name: name, concurrency: c}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for i := 0; i < c; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			fails := 0
			for time.Now().Before(deadline) {
				t := time.Now()
				if err := fn(); err != nil {
					fails++
					continue
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			r.lat = append(r.lat, lat...)
			r.ok += len(lat)
			r.other += fails
			mu.Unlock()
		}()
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	return r
}

// replay posts prepared serial requests from c clients, each on its own
// kept-alive connection. A 503 (the appliance's bounded queue is full) is
// counted and the same request is sent again after a pause, as snapd
// retries; its request-id is unused, since admission refuses before
// anything is claimed.
func replay(addr string, c int, reqs [][]byte) result {
	return replayCheck(addr, c, reqs, serialCheck)
}

// serialCheck accepts a 200's answer if it is a serial assertion.
func serialCheck(ctype string, body []byte) error {
	if ctype != asserts.MediaType || !bytes.HasPrefix(body, []byte("type: serial\n")) {
		return fmt.Errorf("200 without a serial assertion")
	}
	return nil
}

// replayCheck is replay with check deciding whether a 200's answer is
// what was asked for.
func replayCheck(addr string, c int, reqs [][]byte, check func(ctype string, body []byte) error) result {
	return replayPool(addr, c, requestPool(reqs), time.Time{}, check)
}

// requestPool is a closed channel holding reqs, for replayPool.
func requestPool(reqs [][]byte) chan []byte {
	next := make(chan []byte, len(reqs))
	for _, q := range reqs {
		next <- q
	}
	close(next)
	return next
}

// replayPool is replayCheck taking its requests from next until it is
// empty or, if until is not zero, until then: what a timed round leaves in
// the pool is the next round's, so rounds of a given length need no
// exact count of requests prepared for each.
func replayPool(addr string, c int, next <-chan []byte, until time.Time, check func(ctype string, body []byte) error) result {
	r := result{concurrency: c}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < c; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn := &rawConn{addr: addr}
			defer conn.close()
			for until.IsZero() || time.Now().Before(until) {
				q, ok := <-next
				if !ok {
					break
				}
			retry:
				t := time.Now()
				status, ctype, body, err := conn.do(q)
				took := time.Since(t)
				if err == nil && status == http.StatusOK {
					err = check(ctype, body)
				}
				mu.Lock()
				switch {
				case err == nil && status == http.StatusOK:
					r.ok++
					r.lat = append(r.lat, took)
				case err == nil && status == http.StatusServiceUnavailable:
					r.busy++
					mu.Unlock()
					time.Sleep(*retryPause)
					goto retry
				default:
					r.other++
					if r.other <= 3 {
						fmt.Fprintf(os.Stderr, "request failed: %d %v %.200s\n", status, err, body)
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	return r
}

// httpFloor serves POST requests whose answer is the token's signature
// of the body's SHA-512 digest, and replays requests(c) requests of a
// serial-request's size against it at concurrency 1 and 8.
func httpFloor(key *hsm.Key, sessions int, requests func(c int) int) ([]result, error) {
	pub, ok := key.Public().(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("the floor phase needs an RSA key")
	}
	sigLen := pub.Size()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		d := sha512.Sum512(body)
		sig, err := key.SignContext(r.Context(), d[:], crypto.SHA512)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(sig)))
		w.Write(sig)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	addr := ln.Addr().String()
	var out []result
	for _, c := range []int{1, 8} {
		reqs := make([][]byte, requests(c))
		for i := range reqs {
			body := make([]byte, 2400)
			rand.Read(body)
			reqs[i] = rawRequest(addr, "/sign", "-", "application/octet-stream", body)
		}
		r := replayCheck(addr, c, reqs, func(ctype string, body []byte) error {
			if len(body) != sigLen {
				return fmt.Errorf("answer of %d bytes, not a signature of the key (%d)", len(body), sigLen)
			}
			return nil
		})
		r.name = fmt.Sprintf("HTTP + token sign only (%d sessions)", sessions)
		out = append(out, r)
	}
	return out, nil
}

// Daemon metrics the bench reads before and after each end-to-end phase.
// A daemon without one of them (an older build) leaves its column empty.
const (
	mSignSum   = `keyrack_token_sign_duration_seconds_sum{result="ok"}`
	mSignCount = `keyrack_token_sign_duration_seconds_count{result="ok"}`
	mCommits   = `keyrack_store_commits_total`
	mSyncs     = `keyrack_store_log_syncs_total`
	mGCs       = `go_gc_duration_seconds_count`
	mGCCPU     = `go_cpu_classes_gc_total_cpu_seconds_total`
)

// daemonStages are the daemon's histograms of the parts of a serial, by
// the prefix of their bucket series.
var daemonStages = []struct{ name, series string }{
	{"session wait", `keyrack_token_session_wait_seconds_bucket{`},
	{"token sign", `keyrack_token_sign_duration_seconds_bucket{result="ok",`},
	{"store unsynced", `keyrack_store_update_duration_seconds_bucket{durability="unsynced",`},
	{"store durable", `keyrack_store_update_duration_seconds_bucket{durability="durable",`},
}

type stageP99 struct {
	name string
	le   float64 // seconds
}

// bucketQuantile is the upper bound of the histogram bucket holding the
// q-quantile of what was observed between scrapes m0 and m1, for the
// histogram whose bucket series start with prefix; false if nothing was
// observed or the quantile lies in the +Inf bucket.
func bucketQuantile(m0, m1 map[string]float64, prefix string, q float64) (float64, bool) {
	type bucket struct{ le, n float64 }
	var bs []bucket
	for name, v := range m1 {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		i := strings.Index(name, `le="`)
		if i < 0 {
			continue
		}
		le, err := strconv.ParseFloat(strings.TrimSuffix(name[i+4:], `"}`), 64)
		if err != nil {
			continue
		}
		bs = append(bs, bucket{le, v - m0[name]})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	if len(bs) == 0 || bs[len(bs)-1].n <= 0 {
		return 0, false
	}
	total := bs[len(bs)-1].n // the +Inf bucket counts everything
	for _, b := range bs {
		if b.n >= q*total {
			return b.le, !math.IsInf(b.le, 1)
		}
	}
	return 0, false
}

// daemonMetrics reads the metrics above from the daemon.
func daemonMetrics(addr string) (map[string]float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		keep := false
		for _, st := range daemonStages {
			keep = keep || strings.HasPrefix(name, st.series)
		}
		switch {
		case keep, name == mSignSum, name == mSignCount, name == mCommits, name == mSyncs, name == mGCs, name == mGCCPU:
			v, err := strconv.ParseFloat(val, 64)
			if err != nil {
				return nil, fmt.Errorf("metrics: %s: %w", line, err)
			}
			out[name] = v
		}
	}
	return out, nil
}

// makeDev has keyrackd bin make the dev dir: its first start makes the
// dev token, its demo key, model and clients. Then edit is applied to its
// configuration, for the next start.
func makeDev(bin, devDir, addr string, edit func(*appliance.Config)) error {
	d, err := startDaemon(bin, devDir, addr)
	if err != nil {
		return err
	}
	if err := d.stop(); err != nil {
		return err
	}
	return editConfig(filepath.Join(devDir, "keyrackd.json"), edit)
}

// devClient is the device-service client of the dev daemon at addr, and
// the demo model's assertion, which the devices send with their requests.
func devClient(devDir, addr string) (*device.Client, []byte, error) {
	apiKey, err := os.ReadFile(filepath.Join(devDir, "api-key"))
	if err != nil {
		return nil, nil, err
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}, Timeout: time.Minute}
	cl := &device.Client{URL: "http://" + addr + "/v1/", APIKey: strings.TrimSpace(string(apiKey)), HTTP: hc}
	// The model is the signing client's to ask for; the devices register
	// with the device-service key.
	signingKey, err := os.ReadFile(filepath.Join(devDir, "signing-key"))
	if err != nil {
		return nil, nil, err
	}
	signer := &device.Client{URL: cl.URL, APIKey: strings.TrimSpace(string(signingKey)), HTTP: hc}
	model, err := signer.SignModel(context.Background(), appliance.DemoModel)
	if err != nil {
		return nil, nil, err
	}
	return cl, model, nil
}

type daemonProc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has ended
	err  error         // of Wait, once done
	log  string
}

func startDaemon(bin, devDir, addr string, extra ...string) (*daemonProc, error) {
	return startDaemonEnv(bin, devDir, addr, nil, 2*time.Minute, extra...)
}

// startDaemonEnv starts keyrackd with env added to this process's
// environment and waits up to wait for its health to be ok. A daemon that
// exits first is reported at once, with the end of its log.
func startDaemonEnv(bin, devDir, addr string, env []string, wait time.Duration, extra ...string) (*daemonProc, error) {
	cmd := exec.Command(bin, append([]string{"-dev", devDir, "-listen", addr}, extra...)...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	logPath := filepath.Join(filepath.Dir(devDir), "keyrackd.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child holds its own descriptor
	start, _ := logf.Seek(0, io.SeekEnd)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d := &daemonProc{cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() { d.err = cmd.Wait(); close(d.done) }()
	deadline := time.Now().Add(wait)
	last := ""
	for time.Now().Before(deadline) {
		select {
		case <-d.done:
			return nil, fmt.Errorf("keyrackd exited (%v) before it was healthy: %s", d.err, logTail(logPath, start))
		default:
		}
		resp, err := http.Get("http://" + addr + "/v1/health")
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return d, nil
			}
			last = fmt.Sprintf("; last health: %d %s", resp.StatusCode, bytes.TrimSpace(b))
		}
		time.Sleep(200 * time.Millisecond)
	}
	d.stop()
	return nil, fmt.Errorf("keyrackd did not become healthy within %v%s: %s", wait, last, logTail(logPath, start))
}

// logTail is the last lines a log file gained after offset from, for an
// error message.
func logTail(path string, from int64) string {
	b, err := os.ReadFile(path)
	if err != nil || from > int64(len(b)) {
		return "(no log: " + path + ")"
	}
	lines := strings.Split(strings.TrimSpace(string(b[from:])), "\n")
	tail := lines[max(0, len(lines)-5):]
	// A crash ends with registers: the reason is at its start.
	for i, l := range lines[:max(0, len(lines)-5)] {
		if strings.HasPrefix(l, "panic:") || strings.HasPrefix(l, "fatal error:") || strings.HasPrefix(l, "SIG") || strings.Contains(l, `"level":"ERROR"`) {
			tail = slices.Concat(lines[i:min(i+2, len(lines)-5)], []string{"..."}, tail)
			break
		}
	}
	return fmt.Sprintf("log %s ends:\n  %s", path, strings.Join(tail, "\n  "))
}

func (d *daemonProc) stop() error {
	select {
	case <-d.done:
		return nil
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
	return d.err
}

// editConfig applies edit to the dev configuration at path.
func editConfig(path string, edit func(*appliance.Config)) error {
	cfg, err := appliance.LoadConfig(path)
	if err != nil {
		return err
	}
	edit(&cfg)
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// cpuTime is the user+system CPU time of a process so far.
func cpuTime(pid int) time.Duration {
	d, _, _ := procStat(fmt.Sprintf("/proc/%d/stat", pid))
	return d
}

// threadCPU splits a process's CPU time so far between its SCHED_IDLE
// threads (keyrackd's signing threads under token.signing_priority idle)
// and the others. Threads that have ended are not counted.
func threadCPU(pid int) (idle, other time.Duration) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0
	}
	for _, t := range tasks {
		d, policy, ok := procStat(filepath.Join(dir, t.Name(), "stat"))
		switch {
		case !ok:
		case policy == "5": // SCHED_IDLE
			idle += d
		default:
			other += d
		}
	}
	return idle, other
}

// procStat reads a process's or thread's /proc stat file: its user+system
// CPU time so far and its scheduling policy (a number: 5 is SCHED_IDLE).
func procStat(path string) (cpu time.Duration, policy string, ok bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, "", false
	}
	// Fields after the command name (which may hold spaces) start after
	// ")": the state is f[0], utime and stime f[11] and f[12], the policy
	// f[38].
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 39 {
		return 0, "", false
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100, f[38], true // USER_HZ is 100 on Linux
}

func rssMiB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for %d", pid)
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// benchDevices makes n simulated devices with keys of bits. The bench
// gives them RSA-4096 keys, the size snapd's device manager generates, so
// that checking a serial-request's signature costs what it costs for a
// real device. They serve the intrinsic floor's streams, which record no
// binding of key to serial; keyrackd's requests each need a key of their
// own (keyPool). The keys are made on every core, before anything is timed.
func benchDevices(n, bits int) ([]*device.Device, error) {
	devs := make([]*device.Device, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	for range runtime.NumCPU() {
		wg.Go(func() {
			for i := range next {
				devs[i], errs[i] = device.New(appliance.DemoBrand, appliance.DemoModel, bits)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return devs, nil
}

// serialRequests prepares n complete POST /v1/serial requests, each with
// a request-id of its own from the daemon at addr and signed by one of
// devs, on every core: signing RSA-4096 serial-requests is most of the
// time the bench spends outside its timed phases.
func serialRequests(cl *device.Client, kp *keyPool, addr string, n int) ([][]byte, error) {
	devs, err := kp.take(n)
	if err != nil {
		return nil, err
	}
	return prepareSerials(cl, devs, addr, "/v1/serial", func(int) string { return "" })
}

// prepareSerials is serialRequests for devs, whose i-th asks for serial(i)
// ("": the service assigns it), posting to path: -target's services put
// their device service where they like and may not assign serials.
func prepareSerials(cl *device.Client, devs []*device.Device, addr, path string, serial func(i int) string) ([][]byte, error) {
	n := len(devs)
	reqs := make([][]byte, n)
	workers := runtime.NumCPU()
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			// Worker w takes every workers-th request, each from a device
			// of its own (keyPool).
			for i := w; i < n; i += workers {
				rid, err := cl.RequestID(context.Background())
				if err != nil {
					errs[w] = err
					return
				}
				dv := devs[i]
				req, err := dv.SerialRequest(rid, serial(i), nil)
				if err != nil {
					errs[w] = err
					return
				}
				reqs[i] = rawRequest(addr, path, cl.APIKey, asserts.MediaType, dv.Stream(req))
			}
		})
	}
	wg.Wait()
	return reqs, errors.Join(errs...)
}

// defaultPrimeCache is the devices' prime cache under the user's cache
// directory, or none without one.
func defaultPrimeCache() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "keyrack-bench", "device-primes-2048")
}
