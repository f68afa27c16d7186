//go:build linux

package hsm_test

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha512"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyrack/keyrack/hsm"
)

// idleThreads counts this process's threads in SCHED_IDLE (policy 5, the
// 41st field of /proc/self/task/*/stat).
func idleThreads(t *testing.T) int {
	t.Helper()
	stats, err := filepath.Glob("/proc/self/task/*/stat")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the thread ended meanwhile
		}
		// Fields after the command name (which may hold spaces) start
		// at field 3.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 38 && f[38] == "5" {
			n++
		}
	}
	return n
}

// TestIdleSigning: with IdleSigning every signature is made on a thread in
// SCHED_IDLE, one per session, while the callers' threads keep their
// policy; the signatures are good; Close ends the idle threads. Without
// it, signatures are made at normal priority and no thread is idle.
func TestIdleSigning(t *testing.T) {
	digest := sha512.Sum512([]byte("idle"))
	for _, idle := range []bool{false, true} {
		// Idle threads get next to no CPU while other test binaries keep
		// the cores busy: wait for sessions as long as that takes.
		withFaultyModuleConfig(t, func(c *hsm.Config) { c.IdleSigning, c.AcquireTimeout = idle, time.Minute }, func(m *hsm.Module, f *hsm.Faulty, k *hsm.Key) {
			var mu sync.Mutex
			var onIdle, onNormal int
			f.Set(func(f *hsm.Faulty) {
				f.OnSign = func() {
					yes, err := hsm.ThreadIsIdleForTest()
					if err != nil {
						t.Error(err)
					}
					mu.Lock()
					defer mu.Unlock()
					if yes {
						onIdle++
					} else {
						onNormal++
					}
				}
			})
			var wg sync.WaitGroup
			for i := 0; i < 6; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					runtime.LockOSThread()
					defer runtime.UnlockOSThread()
					sig, err := k.SignContext(context.Background(), digest[:], crypto.SHA512)
					if err != nil {
						t.Error(err)
						return
					}
					if err := rsa.VerifyPKCS1v15(k.Public().(*rsa.PublicKey), crypto.SHA512, digest[:], sig); err != nil {
						t.Errorf("idle %v: bad signature: %v", idle, err)
					}
					if yes, _ := hsm.ThreadIsIdleForTest(); yes {
						t.Errorf("idle %v: the caller's thread was left in SCHED_IDLE", idle)
					}
				}()
			}
			wg.Wait()
			mu.Lock()
			gotIdle, gotNormal := onIdle, onNormal
			mu.Unlock()
			threads := idleThreads(t)
			if idle && (gotIdle != 6 || gotNormal != 0 || threads != 2) {
				t.Errorf("idle signing: %d signatures on idle threads, %d on normal ones, %d idle threads (want 6, 0, 2)", gotIdle, gotNormal, threads)
			}
			if !idle && (gotIdle != 0 || gotNormal != 6 || threads != 0) {
				t.Errorf("normal signing: %d signatures on idle threads, %d on normal ones, %d idle threads (want 0, 6, 0)", gotIdle, gotNormal, threads)
			}
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(2 * time.Second)
			for idleThreads(t) != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("idle %v: %d idle threads left after Close", idle, idleThreads(t))
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}
