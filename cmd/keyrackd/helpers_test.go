package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/store/pgtest"
	"github.com/keyrack/keyrack/hsm"
	"github.com/keyrack/keyrack/softhsm"
)

// The keyrackd binary the process tests run, built once per test binary.
var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func keyrackdBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "keyrackd-test-bin-"); buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(buildDir, "keyrackd"), ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "keyrackd")
}

// startWithConfig runs keyrackd -config cfgPath with env added, logging to
// cfgPath.log, until the test ends, and waits until addr is healthy.
func startWithConfig(t *testing.T, cfgPath, addr string, env []string) {
	t.Helper()
	cmd := exec.Command(keyrackdBinary(t), "-config", cfgPath)
	cmd.Env = append(os.Environ(), env...)
	logf, err := os.Create(cfgPath + ".log")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); logf.Close() })
	waitHealthy(t, addr)
}

// postgresDSN starts a throwaway PostgreSQL server for the test and
// returns a new database on it.
func postgresDSN(t *testing.T) string {
	t.Helper()
	pg, err := pgtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Stop() })
	dsn, err := pg.NewDatabase()
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// writePostgresConfig writes work/name.json: a dev appliance (quorum 1)
// listening on addr, with state in work, the store dsn and the token tok.
func writePostgresConfig(t *testing.T, work, name, addr, dsn string, tok *softhsm.Token) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{"listen": addr, "dev": true, "state_dir": work,
		"officers": map[string]any{"quorum": 1},
		"store":    map[string]any{"driver": "postgres", "dsn": dsn},
		"token":    map[string]any{"module": tok.Module, "label": tok.Label, "pin_file": tok.PINFile}})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(work, name+".json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// seedDemo makes the demo data (key, model, API client, officer; their
// credentials in work) in the PostgreSQL store dsn through an in-process
// appliance configured by cfgPath, before any keyrackd runs on it.
func seedDemo(t *testing.T, cfgPath, dsn, work string) {
	t.Helper()
	ctx := context.Background()
	cfg, err := appliance.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	mod, err := hsm.Open(cfg.Token.HSM())
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close()
	db, err := store.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	app, err := appliance.New(ctx, cfg, mod, db, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := app.EnsureDemo(ctx, work); err != nil {
		t.Fatal(err)
	}
}
