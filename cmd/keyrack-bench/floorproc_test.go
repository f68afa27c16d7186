package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/hsm"
	"github.com/keyrack/keyrack/softhsm"
)

// TestMain lets the test binary be the floor's child process, as the
// bench binary is for floorWindow.
func TestMain(m *testing.M) {
	if os.Getenv(floorChildEnv) != "" {
		os.Exit(floorChild())
	}
	os.Exit(m.Run())
}

// TestFloorWindowRemote: the floor served by a child process on a real
// p11-kit server signs every serial it counts (its store recorded the
// warm-up's and the window's), and both processes' CPU is read.
func TestFloorWindowRemote(t *testing.T) {
	if _, err := softhsm.ServerPath(); err != nil {
		t.Skip("p11-kit-server not installed:", err)
	}
	client, err := softhsm.ClientModulePath()
	if err != nil {
		t.Skip("p11-kit-client.so not installed:", err)
	}
	dir := t.TempDir()
	tok, err := softhsm.Create(filepath.Join(dir, "token"), "bench-floor-remote")
	if err != nil {
		t.Fatal(err)
	}
	mod, err := hsm.Open(tok.Config())
	if err != nil {
		t.Fatal(err)
	}
	key, err := mod.GenerateRSA(context.Background(), hsm.KeySpec{Label: appliance.DemoKey, Bits: 4096})
	if err != nil {
		mod.Close()
		t.Fatal(err)
	}
	devs, err := benchDevices(2, 2048)
	if err != nil {
		mod.Close()
		t.Fatal(err)
	}
	streams, err := floorStreams(key, devs, 4)
	mod.Close()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := softhsm.Serve(tok, filepath.Join(dir, "p11", "token.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Kill)
	rt := &remoteToken{rc: remoteConfig{client: client, tok: tok, concurrency: 2, rate: 20, sessions: 2},
		tokenRoot: srv.PID(), sock: srv.Socket}
	f, err := rt.floorWindow(streams, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if f.e2e.ok == 0 || f.rows != f.e2e.ok+50 {
		t.Errorf("window: %d serials, store has %d rows; want the 50 of the warm-up more", f.e2e.ok, f.rows)
	}
	if f.daemonCPU <= 0 || f.tokenCPU <= 0 || f.ratio() <= 0 {
		t.Errorf("CPU not read: floor %v, token %v", f.daemonCPU, f.tokenCPU)
	}
	t.Logf("%d serials, floor %v and token %v per serial, ratio %.3f", f.e2e.ok, f.perSerial(), f.perSignature(), f.ratio())
}
