//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/device"
	"github.com/keyrack/keyrack/hsm"
)

// TestDaemonIdleSigning: with token.signing_priority "idle" the daemon
// signs on one SCHED_IDLE thread per session, gives the runtime one P per
// two such threads on top of its default, and its signatures are good.
func TestDaemonIdleSigning(t *testing.T) {
	work := t.TempDir()
	bin := keyrackdBinary(t)
	devDir := filepath.Join(work, "dev")
	addr := freeAddr(t)
	first := startDaemon(t, bin, devDir, addr)
	waitHealthy(t, addr)
	first.stop(t)
	if strings.Contains(first.log, "signing at idle priority") {
		t.Fatal("the dev configuration signs at idle priority by default")
	}

	cfgPath := filepath.Join(devDir, "keyrackd.json")
	cfg, err := appliance.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Token.SigningPriority = appliance.PriorityIdle
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, bin, devDir, addr)
	waitHealthy(t, addr)
	signingKey, err := os.ReadFile(filepath.Join(devDir, "signing-key"))
	if err != nil {
		t.Fatal(err)
	}
	signer := &device.Client{URL: "http://" + addr + "/v1/", APIKey: strings.TrimSpace(string(signingKey))}
	raw, err := signer.SignModel(context.Background(), appliance.DemoModel)
	if err != nil {
		t.Fatal(err)
	}
	if a, err := asserts.Decode(raw); err != nil || a.Type() != asserts.ModelType {
		t.Fatalf("model answer: %v %s", err, raw)
	}
	idle := idleThreadsOf(t, d.cmd.Process.Pid)
	d.stop(t)

	var line struct {
		Msg        string `json:"msg"`
		Threads    int    `json:"threads"`
		GOMAXPROCS int    `json:"gomaxprocs"`
	}
	sc := bufio.NewScanner(strings.NewReader(d.log))
	for sc.Scan() {
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "signing at idle priority" {
			break
		}
	}
	if line.Msg == "" || line.Threads < 1 {
		t.Fatalf("no idle-priority line in the log:\n%s", d.log)
	}
	if idle != line.Threads {
		t.Errorf("%d SCHED_IDLE threads, want one per session (%d)", idle, line.Threads)
	}
	if os.Getenv("GOMAXPROCS") == "" && line.GOMAXPROCS != runtime.GOMAXPROCS(0)+hsm.IdlePs(line.Threads) {
		t.Errorf("GOMAXPROCS %d, want %d + %d for %d idle threads", line.GOMAXPROCS, runtime.GOMAXPROCS(0), hsm.IdlePs(line.Threads), line.Threads)
	}
}

// idleThreadsOf counts the threads of process pid in SCHED_IDLE, as ps
// sees them (scheduling class IDL).
func idleThreadsOf(t *testing.T, pid int) int {
	t.Helper()
	out, err := exec.Command("ps", "-L", "-o", "cls=", "-p", strconv.Itoa(pid)).Output()
	if err != nil {
		t.Fatalf("ps: %v", err)
	}
	return strings.Count(string(out), "IDL")
}

func TestOpenTokenHint(t *testing.T) {
	idle := appliance.TokenConfig{SigningPriority: appliance.PriorityIdle}
	refused := fmt.Errorf("hsm: idle-priority signing threads: %w", syscall.EPERM)
	if h := openTokenHint(idle, refused); !strings.Contains(h, "SystemCallFilter=sched_setattr") {
		t.Errorf("no hint for a refused sched_setattr: %q", h)
	}
	if h := openTokenHint(appliance.TokenConfig{}, refused); h != "" {
		t.Errorf("hint at normal priority: %q", h)
	}
	if h := openTokenHint(idle, errors.New("no token")); h != "" {
		t.Errorf("hint for another error: %q", h)
	}
}
