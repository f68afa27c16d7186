package hsm

import (
	"fmt"
	"os"
	"runtime"
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
// thread), so Open gives the runtime one more P per signing thread, and
// Close takes them back, unless GOMAXPROCS is set in the environment:
// without them, measured, p99 got worse, and a process whose other
// threads keep the cores busy stalled for seconds. And SCHED_IDLE threads
// get almost
// nothing while any other process keeps the CPUs busy: on a machine
// shared with CPU-heavy work, signing slows to a crawl. With a hardware
// HSM the arithmetic is not on our CPUs and this buys nothing.

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
	if os.Getenv("GOMAXPROCS") == "" {
		m.procs = m.cfg.Sessions
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + m.procs)
	}
	return nil
}

// stopIdleSigners ends the signing threads (each with its goroutine, when
// it next gets a core) and gives back the Ps added for them.
func (m *Module) stopIdleSigners() {
	close(m.signJobs)
	if m.procs > 0 {
		runtime.GOMAXPROCS(max(1, runtime.GOMAXPROCS(0)-m.procs))
		m.procs = 0
	}
}

// idleSigner runs jobs on a thread of its own in SCHED_IDLE. The thread
// stays locked when the goroutine returns, so the runtime ends it instead
// of reusing it.
func idleSigner(jobs <-chan func(), ready chan<- error) {
	runtime.LockOSThread()
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
