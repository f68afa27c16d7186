package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/device"
	"github.com/keyrack/keyrack/softhsm"
)

// The token out of process. With SoftHSM loaded into keyrackd, the token's
// RSA arithmetic is keyrackd's CPU too, so the daemon's CPU per serial
// says little about what the appliance itself costs, and nothing about
// how many serials two cores would drive in front of a hardware HSM. This
// phase serves the same dev token from p11-kit's RPC server (its own
// process, as a network HSM's client library talks to the HSM), has
// keyrackd load p11-kit's client module, and reads from /proc the CPU of
// keyrackd and of the token's processes separately over one end-to-end
// window: keyrackd's CPU per serial is then the appliance's own cost, and
// its ratio to the token's CPU per signature the share of a core the
// appliance needs per core of signing.

// Where Debian and Ubuntu put p11-kit's RPC server and client module
// (packages p11-kit and p11-kit-modules).
const (
	defaultP11KitServer = "/usr/libexec/p11-kit/p11-kit-server"
	defaultP11KitClient = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so"
)

type remoteConfig struct {
	keyrackd, devDir, addr string
	tok                    *softhsm.Token
	server, client         string
	concurrency            int
	dur                    time.Duration
	// rate estimates the serials per second, to prepare enough requests
	// for dur; what is left over is not sent.
	rate     float64
	profile  string // keyrackd's -cpuprofile, if not empty
	keys     *keyPool
	sessions int // the token sessions keyrackd opens
	// windows is how many windows of dur the requests are prepared for
	// (0 counts as 1).
	windows int
	// floorStreams, if any, are sent to the intrinsic floor in a window
	// of its own on the same token server after keyrackd's (floorproc.go).
	floorStreams [][]byte
}

type remoteResult struct {
	e2e result
	// daemonCPU and tokenCPU are keyrackd's and the token processes' CPU
	// over the window; signs the token signatures keyrackd counted in it.
	daemonCPU, tokenCPU time.Duration
	signs               float64
	// signTime is the mean time of one signature as keyrackd sees it
	// (the RPC included), tokenBusy the share of the window its sessions
	// spent signing.
	signTime  time.Duration
	tokenBusy float64
	// floor is the intrinsic floor's window (rc.floorStreams), nil if
	// keyrackd's window failed.
	floor *floorResult
}

// perSerial is keyrackd's CPU per issued serial.
func (r remoteResult) perSerial() time.Duration {
	if r.e2e.ok == 0 {
		return 0
	}
	return r.daemonCPU / time.Duration(r.e2e.ok)
}

// perSignature is the token processes' CPU per signature.
func (r remoteResult) perSignature() time.Duration {
	if r.signs <= 0 {
		return 0
	}
	return time.Duration(float64(r.tokenCPU) / r.signs)
}

// ratio is keyrackd's CPU per serial over the token's per signature.
func (r remoteResult) ratio() float64 {
	if r.perSignature() <= 0 {
		return 0
	}
	return float64(r.perSerial()) / float64(r.perSignature())
}

// remotePhase runs the phase. An error is the reason it was skipped: the
// bench reports it and goes on.
func remotePhase(rc remoteConfig) (remoteResult, error) {
	rt, err := startRemote(rc)
	if err != nil {
		return remoteResult{}, err
	}
	defer rt.close()
	out, err := rt.window(rc.dur)
	if err != nil {
		return out, err
	}
	out.floor = &floorResult{skipped: errors.New("not run")}
	if len(rc.floorStreams) > 0 {
		f, err := rt.floorWindow(rc.floorStreams, rc.dur)
		f.skipped = err
		out.floor = &f
	}
	if err := rt.d.stop(); err != nil && rc.profile != "" {
		return out, fmt.Errorf("keyrackd's shutdown (its CPU profile may be incomplete): %w", err)
	}
	return out, nil
}

// remoteToken is one keyrackd on the token out of process, warmed up and
// with requests prepared for its windows.
type remoteToken struct {
	rc        remoteConfig
	d         *daemonProc
	tokenRoot int    // p11-kit-server's pid
	sock      string // its socket
	pool      chan []byte
	undo      []func() // run last first by close
}

// close stops keyrackd and the token process and restores the dev
// configuration.
func (rt *remoteToken) close() {
	for i := len(rt.undo) - 1; i >= 0; i-- {
		rt.undo[i]()
	}
	rt.undo = nil
}

// startRemote starts p11-kit-server on the dev token and keyrackd on its
// client module, prepares requests for rc.windows windows of rc.dur (at
// least one) and warms up. The comparison keeps two of these up at once,
// one per dev dir (each dir's token socket and logs sit beside it).
func startRemote(rc remoteConfig) (_ *remoteToken, err error) {
	rt := &remoteToken{rc: rc}
	defer func() {
		if err != nil {
			rt.close()
		}
	}()
	for _, f := range []string{rc.server, rc.client} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("p11-kit is not installed (apt-get install p11-kit p11-kit-modules): %w", err)
		}
	}
	work := filepath.Dir(rc.devDir)
	sock := filepath.Join(work, "token.sock")
	os.Remove(sock)
	srvLog := filepath.Join(work, "p11-kit-server.log")
	logf, err := os.Create(srvLog)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child holds its own descriptor
	srv := exec.Command(rc.server, "--provider", rc.tok.Module, "-n", sock, "-f", "pkcs11:token="+rc.tok.Label)
	srv.Env = append(os.Environ(), rc.tok.Env()...)
	srv.Stdout, srv.Stderr = logf, logf
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", rc.server, err)
	}
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Wait() }()
	rt.undo = append(rt.undo, func() {
		srv.Process.Signal(os.Interrupt)
		select {
		case <-srvDone:
		case <-time.After(5 * time.Second):
			srv.Process.Kill()
			<-srvDone
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case err := <-srvDone:
			srvDone <- err // for the stop in close
			return nil, fmt.Errorf("p11-kit-server exited (%v): %s", err, logTail(srvLog, 0))
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("p11-kit-server made no socket %s in 10 s: %s", sock, logTail(srvLog, 0))
		}
		time.Sleep(50 * time.Millisecond)
	}
	rt.tokenRoot, rt.sock = srv.Process.Pid, sock

	cfgPath := filepath.Join(rc.devDir, "keyrackd.json")
	var saved appliance.TokenConfig
	if err := editConfig(cfgPath, func(cfg *appliance.Config) {
		saved = cfg.Token
		cfg.Token.Module = rc.client
		// Idle-priority signing lets SoftHSM's arithmetic yield to the
		// rest of keyrackd; with the arithmetic in another process, the
		// signing threads only carry the RPC, and at idle priority they
		// would wait behind the token process itself.
		cfg.Token.SigningPriority = appliance.PriorityNormal
	}); err != nil {
		return nil, err
	}
	rt.undo = append(rt.undo, func() { editConfig(cfgPath, func(cfg *appliance.Config) { cfg.Token = saved }) })
	var extra []string
	if rc.profile != "" {
		extra = []string{"-cpuprofile", rc.profile}
	}
	d, err := startDaemonEnv(rc.keyrackd, rc.devDir, rc.addr, []string{"P11_KIT_SERVER_ADDRESS=unix:path=" + sock}, 30*time.Second, extra...)
	if err != nil {
		return nil, fmt.Errorf("keyrackd with %s: %w", rc.client, err)
	}
	rt.d = d
	rt.undo = append(rt.undo, func() { d.stop() })

	apiKey, err := os.ReadFile(filepath.Join(rc.devDir, "api-key"))
	if err != nil {
		return nil, err
	}
	cl := &device.Client{URL: "http://" + rc.addr + "/v1/", APIKey: strings.TrimSpace(string(apiKey))}
	// A short warm-up first: the token process's connection, sessions and
	// login, and each key's first self-check, are not what is measured.
	const warm = 50
	n := warm + int(rc.rate*rc.dur.Seconds()*float64(max(1, rc.windows))*1.2) + 100
	reqs, err := serialRequests(cl, rc.keys, rc.addr, n)
	if err != nil {
		return nil, fmt.Errorf("request-ids from keyrackd: %w", err)
	}
	if w := replayPool(rc.addr, rc.concurrency, requestPool(reqs[:warm]), time.Time{}, serialCheck); w.ok == 0 {
		return nil, fmt.Errorf("no serial issued through %s (%d failed): %s", rc.client, w.other, logTail(d.log, 0))
	}
	rt.pool = requestPool(reqs[warm:])
	return rt, nil
}

// window measures one end-to-end window of dur, with keyrackd's CPU and
// the token processes' read apart. What it leaves in the pool of prepared
// requests is the next window's.
func (rt *remoteToken) window(dur time.Duration) (remoteResult, error) {
	var out remoteResult
	rc, d := rt.rc, rt.d
	m0, err := daemonMetrics(rc.addr)
	if err != nil {
		return out, err
	}
	d0, t0 := cpuTime(d.cmd.Process.Pid), treeCPU(rt.tokenRoot)
	r := replayPool(rc.addr, rc.concurrency, rt.pool, time.Now().Add(dur), serialCheck)
	out.daemonCPU, out.tokenCPU = cpuTime(d.cmd.Process.Pid)-d0, treeCPU(rt.tokenRoot)-t0
	m1, err := daemonMetrics(rc.addr)
	if err != nil {
		return out, err
	}
	r.name = "end to end, token out of process"
	out.e2e = r
	out.signs = m1[mSignCount] - m0[mSignCount]
	if out.signs <= 0 {
		// An older daemon without the metric signs once per serial.
		out.signs = float64(r.ok)
	}
	sum := m1[mSignSum] - m0[mSignSum]
	out.signTime = time.Duration(sum / out.signs * float64(time.Second))
	if r.ok == 0 {
		return out, fmt.Errorf("no serial issued in the window (%d failed, %d 503s)", r.other, r.busy)
	}
	out.tokenBusy = sum / (r.elapsed.Seconds() * float64(max(1, rc.sessions)))
	return out, nil
}

// treeCPU is the user+system CPU time so far of process root, of its
// descendants alive now, and of those it has reaped (p11-kit-server runs
// a p11-kit-remote for each connection).
func treeCPU(root int) time.Duration {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, ok := procPPID(pid); ok {
			children[pp] = append(children[pp], pid)
		}
	}
	total := reapedCPU(root)
	for todo := []int{root}; len(todo) > 0; {
		pid := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		total += cpuTime(pid)
		todo = append(todo, children[pid]...)
	}
	return total
}

// statFields are the fields of /proc/PID/stat after the command name
// (which may hold spaces and parentheses): the state is [0], the parent
// [1], utime and stime [11] and [12], reaped children's [13] and [14].
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	return strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
}

func procPPID(pid int) (int, bool) {
	f := statFields(pid)
	if len(f) < 2 {
		return 0, false
	}
	pp, err := strconv.Atoi(f[1])
	return pp, err == nil
}

// reapedCPU is the CPU time of the children a process has waited for.
func reapedCPU(pid int) time.Duration {
	f := statFields(pid)
	if len(f) < 15 {
		return 0
	}
	cu, _ := strconv.ParseInt(f[13], 10, 64)
	cs, _ := strconv.ParseInt(f[14], 10, 64)
	return time.Duration(cu+cs) * time.Second / 100 // USER_HZ is 100 on Linux
}
