package hsm

import (
	"context"
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
