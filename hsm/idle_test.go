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
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keyrack/keyrack/hsm"
)

// idleThreads returns, by thread id, the scheduling state (R, S, ...) of
// this process's threads in SCHED_IDLE (policy 5: the 41st field of
// /proc/self/task/ID/stat; the state is the 3rd).
func idleThreads(t *testing.T) map[string]string {
	t.Helper()
	stats, err := filepath.Glob("/proc/self/task/*/stat")
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the thread ended meanwhile
		}
		// Fields after the command name (which may hold spaces) start
		// at field 3.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 38 && f[38] == "5" {
			states[filepath.Base(filepath.Dir(p))] = f[0]
		}
	}
	return states
}

// TestIdleSigning: with IdleSigning every signature is made on a thread in
// SCHED_IDLE, one per session, while the callers' threads keep their
// policy; the runtime has one more P per two such threads while the
// module is open, and keeps it after Close for the next Open (another open
// and close adds none); the signatures are good; Close ends the idle
// threads. Without it, signatures are made at normal priority and no
// thread is idle.
func TestIdleSigning(t *testing.T) {
	digest := sha512.Sum512([]byte("idle"))
	// The Ps of an earlier run (-count) stay: base is GOMAXPROCS without
	// them.
	added0 := hsm.IdlePsAddedForTest()
	base := runtime.GOMAXPROCS(0) - added0
	envProcs := os.Getenv("GOMAXPROCS") != ""
	// One module with 2 idle threads needs one P; a normal one none.
	want := func(idle bool) int {
		if envProcs {
			return base
		}
		if idle || added0 > 0 {
			return base + 1
		}
		return base
	}
	for _, idle := range []bool{false, true, true} { // the second idle module adds no P
		before := idleThreads(t) // threads of an earlier run (-count) may still be ending
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
			ours := idleThreads(t)
			for id := range before {
				delete(ours, id)
			}
			threads := len(ours)
			if runtime.GOMAXPROCS(0) != want(idle) {
				t.Errorf("idle %v: GOMAXPROCS %d while open, want %d (one more P for two idle threads)", idle, runtime.GOMAXPROCS(0), want(idle))
			}
			if idle && (gotIdle != 6 || gotNormal != 0 || threads != 2) {
				t.Errorf("idle signing: %d signatures on idle threads, %d on normal ones, %d idle threads (want 6, 0, 2)", gotIdle, gotNormal, threads)
			}
			if !idle && (gotIdle != 0 || gotNormal != 6 || threads != 0) {
				t.Errorf("normal signing: %d signatures on idle threads, %d on normal ones, %d idle threads (want 0, 6, 0)", gotIdle, gotNormal, threads)
			}
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			if runtime.GOMAXPROCS(0) != want(idle) {
				t.Errorf("idle %v: GOMAXPROCS %d after Close, want %d (the P stays for the next Open)", idle, runtime.GOMAXPROCS(0), want(idle))
			}
			// An idle thread needs a free core to see the channel closed
			// and end, and with other processes busy it may wait for one
			// for many seconds. What must never be is an idle thread
			// asleep after Close: one handed back to Go's pool, where any
			// goroutine could later run at idle priority. So each one must
			// be gone or runnable (on its way out).
			deadline := time.Now().Add(10 * time.Second)
			for {
				asleep := 0
				states := idleThreads(t)
				for id, st := range states {
					if _, mine := ours[id]; mine && st != "R" {
						asleep++
					}
				}
				if asleep == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("idle %v: idle threads after Close in states %v, want none asleep", idle, states)
				}
				time.Sleep(10 * time.Millisecond)
			}
			// And no goroutine runs at idle priority afterwards: many at
			// once, each holding its thread through a blocking system
			// call, make the runtime use every thread it has spare.
			var seen sync.WaitGroup
			var onIdleAfter atomic.Int32
			for i := 0; i < 64; i++ {
				seen.Add(1)
				go func() {
					defer seen.Done()
					runtime.LockOSThread()
					defer runtime.UnlockOSThread()
					for j := 0; j < 5; j++ {
						if yes, _ := hsm.ThreadIsIdleForTest(); yes {
							onIdleAfter.Add(1)
						}
						ts := syscall.Timespec{Nsec: int64(time.Millisecond)}
						syscall.Nanosleep(&ts, nil)
					}
				}()
			}
			seen.Wait()
			if n := onIdleAfter.Load(); n > 0 {
				t.Fatalf("idle %v: goroutines ran %d times on an idle-priority thread after Close", idle, n)
			}
		})
	}
}
