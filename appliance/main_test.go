package appliance

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/hsm"
	"github.com/keyrack/keyrack/softhsm"
)

// The core's own tests; the API's (package httpapi) drive the core
// through HTTP end to end.

var (
	testTok *softhsm.Token
	testMod *hsm.Module
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	var cleanup func()
	var err error
	testTok, testMod, cleanup, err = softhsm.OpenTemp("core-test", func(c *hsm.Config) { c.RetryInterval = 100 * time.Millisecond })
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cleanup()
	return m.Run()
}

// coreEnv is a core on the package's token with its own store.
type coreEnv struct {
	t   *testing.T
	app *Appliance
	db  *store.DB
}

// newCoreEnv makes the core; opts change its configuration first.
func newCoreEnv(t *testing.T, opts ...func(*Config)) *coreEnv {
	t.Helper()
	ctx := context.Background()
	cfg, err := ParseConfig(strings.NewReader(fmt.Sprintf(
		`{"dev": true, "state_dir": %q, "officers": {"quorum": 2}, "token": {"module": %q, "label": %q, "pin_file": %q}}`,
		t.TempDir(), testTok.Module, testTok.Label, testTok.PINFile)))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		o(&cfg)
	}
	db, err := store.OpenSQLite(ctx, cfg.Store.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	app, err := New(ctx, cfg, testMod, db, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return &coreEnv{t: t, app: app, db: db}
}
