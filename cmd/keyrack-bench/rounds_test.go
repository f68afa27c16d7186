package main

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

func rate(ok int) result { return result{ok: ok, elapsed: time.Second} }

// TestRoundRatios: each end-to-end round is divided by the mean of the
// raw rounds on either side of it, and the summary is the median of those
// ratios with their range.
func TestRoundRatios(t *testing.T) {
	raw := []result{rate(400), rate(500), rate(300), rate(400)}
	e2e := []result{rate(360), rate(200), rate(245)}
	pairs, err := pairRounds(raw, e2e)
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{0.8, 0.5, 0.7}
	for i, p := range pairs {
		if got := p.ratio(); got < want[i]-1e-9 || got > want[i]+1e-9 {
			t.Errorf("round %d: ratio %v, want %v", i, got, want[i])
		}
	}
	if med, lo, hi := ratioStats(pairs); med != 0.7 || lo != 0.5 || hi != 0.8 {
		t.Errorf("median %v range %v-%v, want 0.7 0.5-0.8", med, lo, hi)
	}
	if med, _, _ := ratioStats(pairs[:2]); med != 0.65 {
		t.Errorf("median of two: %v, want their mean 0.65", med)
	}
	if _, err := pairRounds(raw[:3], e2e); err == nil {
		t.Error("three raw rounds around three end-to-end rounds accepted")
	}
	var order []string
	pairs, err = runRounds(2, time.Millisecond, func(time.Duration) result { order = append(order, "raw"); return rate(1) },
		func(time.Duration) result { order = append(order, "e2e"); return rate(1) })
	if err != nil || len(pairs) != 2 {
		t.Fatal(err, len(pairs))
	}
	if got := len(order); got != 5 || order[0] != "raw" || order[1] != "e2e" || order[4] != "raw" {
		t.Errorf("rounds ran as %v, want raw e2e raw e2e raw", order)
	}
}

// TestTreeCPU: a process's CPU counts that of the children it runs, as
// p11-kit-server's counts its p11-kit-remote's.
func TestTreeCPU(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sh -c 'while :; do :; done' & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer func() {
		// End the busy child first (this test's, found by its parent),
		// then the parent.
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			if pid, err := strconv.Atoi(e.Name()); err == nil {
				if pp, ok := procPPID(pid); ok && pp == cmd.Process.Pid {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		cmd.Process.Kill()
	}()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && treeCPU(cmd.Process.Pid) < 200*time.Millisecond {
		time.Sleep(50 * time.Millisecond)
	}
	if tree, own := treeCPU(cmd.Process.Pid), cpuTime(cmd.Process.Pid); tree < 200*time.Millisecond || own > tree/2 {
		t.Errorf("tree %v, the parent alone %v: the child's CPU is not counted", tree, own)
	}
}
