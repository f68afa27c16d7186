package hsm

import (
	"fmt"
	"os"
	"runtime"
	"sync"
)

// Idle-priority signing (Config.IdleSigning).
//
// With a software token the RSA arithmetic of every signature runs on this
// machine's CPUs, inside this process, 4 ms per RSA-4096 signature. At
// normal priority the kernel shares the cores fairly between those
// threads and the short bursts of everything else a request needs (HTTP,
// the store's writer, the next request's checks), so the bursts wait
// behind signatures: measured on 2 cores, store updates reached 8 ms at
// p99 (2-4 ms in SCHED_IDLE) and the sessions sat idle 10% of the time
// (3-4%). In SCHED_IDLE the signing threads get every cycle nothing else
// wants, and anything else that wakes up runs at once.
//
// The signing threads are dedicated: Sessions goroutines, each locked to
// its OS thread for life, take C_SignInit+C_Sign jobs from a channel. A
// thread lowers its own policy once and never raises it (going back needs
// CAP_SYS_NICE or a raised RLIMIT_NICE), and it is never handed back to
// Go's thread pool: when
// its goroutine returns (Close) the runtime ends the thread, so no other
// goroutine ever runs at idle priority.
//
// Two costs to know. Between jobs such a thread may hold one of Go's Ps
// while the kernel runs it last (Go hands a locked goroutine's P to its
// thread), so the runtime gets one more P per two signing threads
// (IdlePs). Measured with 2 sessions on 2 cores (keyrack-bench, runs taken
// in turn): with no extra P, p99 at concurrency 8 was 24-28 ms, and a
// process whose other threads kept the cores busy stalled for seconds;
// with one, 13-14 ms; with one per thread, p99 alike but the rest of the
// daemon took 20% more CPU per serial (more Ps on the same two cores: more
// threads spinning for work and a larger GC worker share, all of it at
// normal priority, so taken from signing). The Ps are added when a module
// first needs them and kept after Close for the next Open: taking them
// back stops the world, which would wait for any P still held by an ending
// signing thread the kernel runs last. Setting GOMAXPROCS in the
// environment turns the adjustment off. And SCHED_IDLE
// threads get almost nothing while any other process keeps the CPUs busy:
// on a machine shared with CPU-heavy work, signing slows to a crawl and
// anything that stops the world (a GC) waits for them. With a hardware HSM
// the arithmetic is not on our CPUs and this buys nothing.

// IdlePs is how many Ps the runtime gets for n idle-priority signing
// threads.
func IdlePs(n int) int { return (n + 1) / 2 }

// The Ps added for the idle threads of every open module: added counts
// those given to the runtime, live those the open modules need.
var idlePs struct {
	sync.Mutex
	added, live int
}

// claimIdlePs records that a module needs n more Ps and gives the runtime
// any beyond those added before.
func claimIdlePs(n int) {
	idlePs.Lock()
	defer idlePs.Unlock()
	idlePs.live += n
	if more := idlePs.live - idlePs.added; more > 0 && os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + more)
		idlePs.added = idlePs.live
	}
}

// releaseIdlePs records that a closed module no longer needs n Ps; they
// stay with the runtime for the next Open.
func releaseIdlePs(n int) {
	idlePs.Lock()
	defer idlePs.Unlock()
	idlePs.live -= n
}

// startIdleSigners starts one idle-priority signing thread per session.
func (m *Module) startIdleSigners() error {
	jobs := make(chan func())
	ready := make(chan error, m.cfg.Sessions)
	for i := 0; i < m.cfg.Sessions; i++ {
		go idleSigner(jobs, ready)
	}
	var first error
	for i := 0; i < m.cfg.Sessions; i++ {
		if err := <-ready; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		close(jobs)
		return fmt.Errorf("hsm: idle-priority signing threads: %w", first)
	}
	m.signJobs = jobs
	m.procs = IdlePs(m.cfg.Sessions)
	claimIdlePs(m.procs)
	return nil
}

// stopIdleSigners ends the signing threads (each with its goroutine, when
// it next gets a core); the Ps added for them stay (see claimIdlePs).
func (m *Module) stopIdleSigners() {
	close(m.signJobs)
	releaseIdlePs(m.procs)
	m.procs = 0
}

// idleSigner runs jobs on a thread of its own in SCHED_IDLE. The thread
// stays locked when the goroutine returns, so the runtime ends it instead
// of reusing it.
//
// Never the process's main thread: the runtime cannot end that one, so it
// parks it for good instead, and a main thread in SCHED_IDLE would also be
// the one the kernel picks first for process-wide signals (SIGTERM), to be
// handled whenever it next gets a core. Seen: about once in twenty test
// runs a signer's goroutine started on the main thread. Such a goroutine
// hands over to a new one that cannot run there: while this one holds the
// main thread locked and waits, the main thread runs nothing else.
func idleSigner(jobs <-chan func(), ready chan<- error) {
	runtime.LockOSThread()
	if onMainThread() {
		locked := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(locked)
			idleSignerLocked(jobs, ready)
		}()
		<-locked
		runtime.UnlockOSThread()
		return
	}
	idleSignerLocked(jobs, ready)
}

// idleSignerLocked is idleSigner on its own locked thread.
func idleSignerLocked(jobs <-chan func(), ready chan<- error) {
	if err := setIdlePolicy(); err != nil {
		ready <- err
		return
	}
	ready <- nil
	for job := range jobs {
		job()
	}
}

// signCall runs call (the token's signing calls) on an idle-priority
// signing thread when the module has them, else on the caller's thread.
// The caller holds a session, and there is one signing thread per session,
// so a free thread is never far.
func (m *Module) signCall(call func()) {
	if m.signJobs == nil {
		call()
		return
	}
	done := make(chan struct{})
	m.signJobs <- func() {
		defer close(done)
		call()
	}
	<-done
}
