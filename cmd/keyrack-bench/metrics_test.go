package main

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestBucketQuantile: the quantile is read from the buckets' growth
// between two scrapes, not from their totals since the daemon started.
func TestBucketQuantile(t *testing.T) {
	p := `h_bucket{k="a",`
	series := func(le string) string { return p + `le="` + le + `"}` }
	m0 := map[string]float64{series("0.001"): 100, series("0.01"): 100, series("0.1"): 100, series("+Inf"): 100}
	m1 := map[string]float64{series("0.001"): 190, series("0.01"): 199, series("0.1"): 200, series("+Inf"): 200,
		`h_bucket{k="b",le="0.001"}`: 1000}
	cases := []struct {
		q    float64
		want float64
		ok   bool
	}{{.5, .001, true}, {.9, .001, true}, {.95, .01, true}, {.99, .01, true}, {1, .1, true}}
	for _, c := range cases {
		got, ok := bucketQuantile(m0, m1, p, c.q)
		if got != c.want || ok != c.ok {
			t.Errorf("q %v: %v %v, want %v %v", c.q, got, ok, c.want, c.ok)
		}
	}
	m1[series("+Inf")] = 300 // a hundred above every finite bound
	if got, ok := bucketQuantile(m0, m1, p, .99); ok {
		t.Errorf("quantile in the +Inf bucket reported as %v", got)
	}
	if _, ok := bucketQuantile(m0, m0, p, .99); ok {
		t.Error("nothing observed, yet a quantile")
	}
}

// TestThreadCPU: CPU burnt by a SCHED_IDLE process counts as idle-thread
// time and none as other; this process's own threads count as other.
func TestThreadCPU(t *testing.T) {
	if _, err := exec.LookPath("chrt"); err != nil {
		t.Skip("no chrt (util-linux)")
	}
	cmd := exec.Command("chrt", "--idle", "0", "sh", "-c", "while :; do :; done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	deadline := time.Now().Add(10 * time.Second)
	var idle, other time.Duration
	for time.Now().Before(deadline) {
		if idle, other = threadCPU(cmd.Process.Pid); idle >= 100*time.Millisecond {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if idle < 100*time.Millisecond || other != 0 {
		t.Errorf("a busy SCHED_IDLE process: idle %v, other %v", idle, other)
	}
	busy := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(busy) {
	}
	if idle, other := threadCPU(os.Getpid()); idle != 0 || other == 0 {
		t.Errorf("this test process: idle %v, other %v", idle, other)
	}
}
