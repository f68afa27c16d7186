package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/hsm"
)

// The intrinsic floor with the token out of process. appliance_cpu_ratio
// says what keyrackd costs per signature of the token; on its own it does
// not say how much of that any service made of these parts must cost (an
// RSA-4096 check of the device's signature and of the token's, an
// assertion decoded and assembled, a durable SQLite row, net/http, the
// p11-kit client). So the same window is run against the intrinsic floor
// (startFloor) served by a child process of this bench on the same token
// server, and that process's CPU per serial is read from /proc the way
// keyrackd's is: floor_cpu_ratio is the least appliance_cpu_ratio can be
// with these parts on this machine, and keyrackd's over it what the
// appliance adds.

// floorChildEnv, when set, makes this program the floor's child: it reads
// a floorChildConfig line on stdin, serves the floor, writes its address
// on stdout, and on stdin's end writes the rows its store recorded and
// exits.
const floorChildEnv = "KEYRACK_BENCH_FLOOR_CHILD"

type floorChildConfig struct {
	Module   string `json:"module"`
	Label    string `json:"label"`
	PINFile  string `json:"pin_file"`
	Sessions int    `json:"sessions"`
}

// floorChild is the child's main.
func floorChild() int {
	in := bufio.NewReader(os.Stdin)
	line, err := in.ReadBytes('\n')
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor child: reading its configuration:", err)
		return 1
	}
	var fc floorChildConfig
	if err := json.Unmarshal(line, &fc); err != nil {
		fmt.Fprintln(os.Stderr, "floor child:", err)
		return 1
	}
	mod, err := hsm.Open(hsm.Config{Path: fc.Module, TokenLabel: fc.Label, PIN: hsm.PINSource{File: fc.PINFile}, Sessions: fc.Sessions})
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor child:", err)
		return 1
	}
	defer mod.Close()
	key, err := mod.FindKeyByLabel(context.Background(), appliance.DemoKey)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor child:", err)
		return 1
	}
	fs, err := startFloor(key)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor child:", err)
		return 1
	}
	fmt.Println(fs.addr)
	io.Copy(io.Discard, in)
	rows, err := fs.close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor child:", err)
		return 1
	}
	fmt.Println(rows)
	return 0
}

// floorResult is the floor's window with the token out of process: a
// remoteResult (CPU per serial and per signature, their ratio) whose
// daemon is the floor's process and which signs once a serial.
type floorResult struct {
	remoteResult
	rows    int // signing-log rows its store recorded
	skipped error
}

// floorWindow runs the floor in a child process on rt's token server and
// sends it streams (over and over: the floor keeps no one-key-one-serial
// rule) at rt's concurrency for dur.
func (rt *remoteToken) floorWindow(streams [][]byte, dur time.Duration) (out floorResult, err error) {
	if len(streams) == 0 {
		return out, errors.New("no streams")
	}
	self, err := os.Executable()
	if err != nil {
		return out, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), floorChildEnv+"=1", "P11_KIT_SERVER_ADDRESS=unix:path="+rt.sock)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return out, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return out, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return out, err
	}
	defer func() {
		stdin.Close()
		if werr := cmd.Wait(); werr != nil && err == nil {
			err = fmt.Errorf("floor child: %v: %s", werr, strings.TrimSpace(stderr.String()))
		}
	}()
	fc, _ := json.Marshal(floorChildConfig{Module: rt.rc.client, Label: rt.rc.tok.Label, PINFile: rt.rc.tok.PINFile, Sessions: rt.rc.sessions})
	if _, err := stdin.Write(append(fc, '\n')); err != nil {
		return out, err
	}
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() {
		return out, fmt.Errorf("floor child gave no address: %s", strings.TrimSpace(stderr.String()))
	}
	addr := lines.Text()

	// As many requests as the window can take, cycling over the streams;
	// the first 50 warm the child up (its connection, sessions, login).
	const warm = 50
	n := warm + int(rt.rc.rate*dur.Seconds()*1.2) + 100
	reqs := make([][]byte, n)
	for i := range reqs {
		reqs[i] = rawRequest(addr, "/v1/serial", "-", asserts.MediaType, streams[i%len(streams)])
	}
	if w := replay(addr, rt.rc.concurrency, reqs[:warm]); w.ok == 0 {
		return out, fmt.Errorf("the floor issued no serial through %s (%d failed)", rt.rc.client, w.other)
	}
	pid := cmd.Process.Pid
	f0, t0 := cpuTime(pid), treeCPU(rt.tokenRoot)
	out.e2e = replayPool(addr, rt.rc.concurrency, requestPool(reqs[warm:]), time.Now().Add(dur), serialCheck)
	out.daemonCPU, out.tokenCPU = cpuTime(pid)-f0, treeCPU(rt.tokenRoot)-t0
	out.signs = float64(out.e2e.ok)
	out.e2e.name = "intrinsic work only, token out of process"
	stdin.Close()
	if lines.Scan() {
		fmt.Sscan(lines.Text(), &out.rows)
	}
	if out.e2e.ok == 0 || out.e2e.other > 0 {
		return out, fmt.Errorf("the floor's window: %d issued, %d failed", out.e2e.ok, out.e2e.other)
	}
	return out, nil
}
