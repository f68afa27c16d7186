package hsm

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/miekg/pkcs11"
)

// Test-only access to internals, for tests that play a hostile token user.

type API = api

// RawForTest runs fn on a worker session with the raw PKCS#11 API.
func (m *Module) RawForTest(ctx context.Context, fn func(p API, sh pkcs11.SessionHandle, slot uint) error) error {
	return m.do(ctx, "test", func(sh pkcs11.SessionHandle, _ uint64) error {
		return fn(m.p, sh, m.slot)
	})
}

// LibraryForTest returns the raw API without taking any lock, for calls
// (C_Finalize) that must happen outside an operation.
func (m *Module) LibraryForTest() API { return m.p }

// HoldSessionsForTest borrows n sessions and returns a func that gives them back.
func (m *Module) HoldSessionsForTest(n int) func() {
	var held []*session
	for i := 0; i < n; i++ {
		s, err := m.acquire(context.Background())
		if err != nil {
			panic(err)
		}
		held = append(held, s)
	}
	return func() {
		for _, s := range held {
			m.release(s)
		}
	}
}

func (m *Module) SetAcquireTimeoutForTest(d time.Duration) (restore func()) {
	old := m.cfg.AcquireTimeout
	m.cfg.AcquireTimeout = d
	return func() { m.cfg.AcquireTimeout = old }
}

// Faulty wraps the real PKCS#11 API and injects faults a software token
// cannot produce. Fields are read under mu by the wrapped calls.
type Faulty struct {
	api
	mu        sync.Mutex
	SignErr   uint          // CKR returned by Sign when not 0
	SignTimes int           // how many Sign calls fail (-1: all)
	SlotErr   uint          // CKR returned by GetSlotList when not 0 (token gone)
	SignDelay time.Duration // added to every Sign
	// OnSign, when set, is called by every Sign on the thread making it.
	OnSign func()
}

// ThreadIsIdleForTest reports whether the calling thread is in SCHED_IDLE.
func ThreadIsIdleForTest() (bool, error) { return threadIsIdle() }

func (f *Faulty) Set(fn func(*Faulty)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *Faulty) Sign(sh pkcs11.SessionHandle, msg []byte) ([]byte, error) {
	f.mu.Lock()
	delay, code, onSign := f.SignDelay, uint(0), f.OnSign
	if f.SignErr != 0 && f.SignTimes != 0 {
		code = f.SignErr
		if f.SignTimes > 0 {
			f.SignTimes--
		}
	}
	f.mu.Unlock()
	if onSign != nil {
		onSign()
	}
	time.Sleep(delay)
	if code != 0 {
		return nil, pkcs11.Error(code)
	}
	return f.api.Sign(sh, msg)
}

func (f *Faulty) GetSlotList(present bool) ([]uint, error) {
	f.mu.Lock()
	code := f.SlotErr
	f.mu.Unlock()
	if code != 0 {
		return nil, pkcs11.Error(code)
	}
	return f.api.GetSlotList(present)
}

// OpenFaulty opens a Module over a fault-injecting wrapper of the library.
func OpenFaulty(cfg Config) (*Module, *Faulty, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, nil, err
	}
	f := &Faulty{api: pkcs11.New(cfg.Path)}
	m, err := openWith(cfg, f)
	return m, f, err
}

// IdlePsAddedForTest is how many Ps idle-priority signing has given the
// runtime in this process so far.
func IdlePsAddedForTest() int {
	idlePs.Lock()
	defer idlePs.Unlock()
	return idlePs.added
}

// IdleSignerOnMainThreadForTest starts an idle signer on the calling
// goroutine, which must be locked to the main thread, as if the runtime
// had started a signer's goroutine there, with no jobs to run. It reports
// whether a signing thread started and whether the main thread is in
// SCHED_IDLE afterwards.
func IdleSignerOnMainThreadForTest() (started, mainIdle bool, err error) {
	if !onMainThread() {
		return false, false, errors.New("not called on the main thread")
	}
	jobs := make(chan func())
	close(jobs)
	ready := make(chan error, 1)
	idleSigner(jobs, ready)
	if err := <-ready; err != nil {
		return false, false, err
	}
	if !onMainThread() {
		return true, false, errors.New("the caller left the main thread")
	}
	mainIdle, err = threadIsIdle()
	return true, mainIdle, err
}
