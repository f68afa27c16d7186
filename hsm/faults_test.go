package hsm_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/keyrack/keyrack/hsm"
)

// withFaultyModule swaps the shared module for one over a fault-injecting
// wrapper of the same SoftHSM token, and swaps back afterwards.
func withFaultyModule(t *testing.T, fn func(m *hsm.Module, f *hsm.Faulty, k *hsm.Key)) {
	t.Helper()
	withFaultyModuleConfig(t, nil, fn)
}

// withFaultyModuleConfig is withFaultyModule with adjust applied to the
// faulty module's configuration.
func withFaultyModuleConfig(t *testing.T, adjust func(*hsm.Config), fn func(m *hsm.Module, f *hsm.Faulty, k *hsm.Key)) {
	t.Helper()
	id := sharedKey(t).ID()
	if err := mod.Close(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cfg := tok.Config()
		cfg.Sessions, cfg.RetryInterval = 2, 200*time.Millisecond
		m, err := hsm.Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		mod = m
		keyOnce = sync.Once{}
		keyOnce.Do(func() { signKey, keyErr = mod.FindKey(context.Background(), id) })
	}()
	cfg := tok.Config()
	cfg.Sessions, cfg.RetryInterval, cfg.AcquireTimeout = 2, 200*time.Millisecond, 300*time.Millisecond
	if adjust != nil {
		adjust(&cfg)
	}
	m, f, err := hsm.OpenFaulty(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	k, err := m.FindKey(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	fn(m, f, k)
}

func TestFaultDeviceErrorRecovers(t *testing.T) {
	withFaultyModule(t, func(m *hsm.Module, f *hsm.Faulty, k *hsm.Key) {
		f.Set(func(f *hsm.Faulty) { f.SignErr, f.SignTimes = pkcs11.CKR_DEVICE_ERROR, 1 })
		before := m.Recoveries()
		signAndVerify(t, k) // one CKR_DEVICE_ERROR, recovered and retried
		if m.Recoveries() == before {
			t.Fatal("no recovery after CKR_DEVICE_ERROR")
		}
	})
}

func TestFaultTokenStaysDown(t *testing.T) {
	withFaultyModule(t, func(m *hsm.Module, f *hsm.Faulty, k *hsm.Key) {
		// The device errors on every signature and the slot is gone.
		f.Set(func(f *hsm.Faulty) {
			f.SignErr, f.SignTimes, f.SlotErr = pkcs11.CKR_DEVICE_ERROR, -1, pkcs11.CKR_DEVICE_REMOVED
		})
		start := time.Now()
		for i := 0; i < 50; i++ {
			_, err := k.SignContext(context.Background(), make([]byte, 64), cryptoSHA512)
			if !errors.Is(err, hsm.ErrTokenUnavailable) {
				t.Fatalf("call %d: %v, want ErrTokenUnavailable", i, err)
			}
		}
		if took := time.Since(start); took > time.Second {
			t.Fatalf("50 calls on a dead device took %v: they must fail fast", took)
		}
		if st := m.Check(context.Background()); st.Up {
			t.Fatal("health says up with the device gone")
		}
		// The device comes back: signing resumes without a reopen.
		f.Set(func(f *hsm.Faulty) { f.SignErr, f.SlotErr = 0, 0 })
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, err := k.SignContext(context.Background(), make([]byte, 64), cryptoSHA512); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("signing did not resume")
			}
			time.Sleep(50 * time.Millisecond)
		}
		signAndVerify(t, k)
	})
}

// TestFaultSlowToken: a token that takes 500 ms per signature must not
// make callers wait without bound: with 2 sessions busy, others get
// ErrBusy after the acquire timeout, and a caller's context is honoured.
func TestFaultSlowToken(t *testing.T) {
	withFaultyModule(t, func(m *hsm.Module, f *hsm.Faulty, k *hsm.Key) {
		f.Set(func(f *hsm.Faulty) { f.SignDelay = 500 * time.Millisecond })
		var wg sync.WaitGroup
		errs := make([]error, 4)
		took := make([]time.Duration, 4)
		for i := range errs {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				start := time.Now()
				_, errs[i] = k.SignContext(context.Background(), make([]byte, 64), cryptoSHA512)
				took[i] = time.Since(start)
			}(i)
			time.Sleep(20 * time.Millisecond)
		}
		wg.Wait()
		busy := 0
		for i, err := range errs {
			if errors.Is(err, hsm.ErrBusy) {
				busy++
				if took[i] > 450*time.Millisecond {
					t.Errorf("ErrBusy after %v: the acquire timeout is 300ms", took[i])
				}
			} else if err != nil {
				t.Errorf("caller %d: %v", i, err)
			}
		}
		if busy != 2 {
			t.Fatalf("%d callers got ErrBusy, want 2 (2 sessions, 4 callers): %v", busy, errs)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		hold := m.HoldSessionsForTest(m.Sessions())
		_, err := k.SignContext(ctx, make([]byte, 64), cryptoSHA512)
		hold()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a cancelled wait: %v", err)
		}
	})
}
