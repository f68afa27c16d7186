package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/device"
	"github.com/keyrack/keyrack/appliance/store"
)

var (
	cliOnce sync.Once
	cliBin  string
	cliErr  error
)

// keyrackBinary builds the officers' CLI next to the daemon.
func keyrackBinary(t *testing.T) string {
	t.Helper()
	keyrackdBinary(t) // makes buildDir
	cliOnce.Do(func() {
		cliBin = filepath.Join(buildDir, "keyrack")
		if out, err := exec.Command("go", "build", "-o", cliBin, "../keyrack").CombinedOutput(); err != nil {
			cliErr = err
			t.Logf("%s", out)
		}
	})
	if cliErr != nil {
		t.Fatal(cliErr)
	}
	return cliBin
}

// registerDemoDevice registers one new device of the demo model at addr,
// with devDir's keys, and returns its serial.
func registerDemoDevice(t *testing.T, devDir, addr string) string {
	t.Helper()
	read := func(f string) string {
		b, err := os.ReadFile(filepath.Join(devDir, f))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	url := "http://" + addr + "/v1/"
	model, err := (&device.Client{URL: url, APIKey: read("signing-key")}).SignModel(context.Background(), appliance.DemoModel)
	if err != nil {
		t.Fatal(err)
	}
	d, err := device.New(appliance.DemoBrand, appliance.DemoModel, 2048)
	if err != nil {
		t.Fatal(err)
	}
	d.ModelAssertion = model
	s, _, err := (&device.Client{URL: url, APIKey: read("api-key")}).Register(context.Background(), d, "")
	if err != nil {
		t.Fatal(err)
	}
	return s.Serial()
}

// TestBackupRestore: an officer backs the running appliance up with
// keyrack backup; the backup is restored into a fresh state directory
// (keyrackd -restore) with the same token, verifies, and the restored
// appliance signs again, carrying on the serial sequence. A restore over
// an existing store, and of a backup whose audit chain was altered, is
// refused and leaves nothing behind.
func TestBackupRestore(t *testing.T) {
	work := t.TempDir()
	bin, cli := keyrackdBinary(t), keyrackBinary(t)
	devDir := filepath.Join(work, "dev")
	addr := freeAddr(t)
	d := startDaemon(t, bin, devDir, addr)
	if s := registerDemoDevice(t, devDir, addr); s != "dev-1" {
		t.Fatalf("first serial %s", s)
	}
	backup := filepath.Join(work, "keyrack-backup.db")
	run := func(name string, args ...string) (string, error) {
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), "KEYRACK_URL=http://"+addr, "KEYRACK_OFFICER_KEY="+filepath.Join(devDir, "officer-key"))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// saveHead saves the appliance's signed head once it covers more than
	// event after (checkpoints follow officers' actions within moments).
	saveHead := func(name string, after int64) (string, int64) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			out, err := exec.Command(cli, "-url", "http://"+addr, "audit", "head").Output()
			var h struct {
				Seq int64 `json:"seq"`
			}
			if err == nil && json.Unmarshal(out, &h) == nil && h.Seq > after {
				p := filepath.Join(work, name)
				if err := os.WriteFile(p, out, 0o644); err != nil {
					t.Fatal(err)
				}
				return p, h.Seq
			}
			if time.Now().After(deadline) {
				t.Fatalf("no signed head past event %d: %v %s", after, err, out)
			}
		}
	}
	headBefore, _ := saveHead("head-before.json", 0)
	out, err := run(cli, "backup", "-o", backup)
	if err != nil || !strings.Contains(out, "audit chain OK") {
		t.Fatalf("keyrack backup: %v\n%s", err, out)
	}
	if fi, err := os.Stat(backup); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", fi, err)
	}
	if out, err := run(cli, "backup", "-o", backup); err == nil || !strings.Contains(out, "exists") {
		t.Fatalf("a second backup over the first: %v\n%s", err, out)
	}
	_, backupHead := saveHead("head-backup.json", 0)
	// Signed after the backup: not in it. An officer's action then has a
	// checkpoint made, and the head saved covers dev-2.
	if s := registerDemoDevice(t, devDir, addr); s != "dev-2" {
		t.Fatalf("second serial %s", s)
	}
	if out, err := run(cli, "audit", "verify"); err != nil {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}
	headLater, _ := saveHead("head-later.json", backupHead)
	d.stop(t)

	// A fresh state directory, the same token.
	var devCfg map[string]any
	raw, err := os.ReadFile(filepath.Join(devDir, "keyrackd.json"))
	if err != nil || json.Unmarshal(raw, &devCfg) != nil {
		t.Fatalf("dev config: %v", err)
	}
	fresh := filepath.Join(work, "fresh")
	addr2 := freeAddr(t)
	devCfg["state_dir"], devCfg["listen"] = fresh, addr2
	delete(devCfg, "store") // the default: state_dir/keyrack.db
	cfgPath := filepath.Join(work, "fresh.json")
	raw, _ = json.Marshal(devCfg)
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	// A backup whose chain was edited is refused, and nothing is left.
	tampered := filepath.Join(work, "tampered.db")
	raw, _ = os.ReadFile(backup)
	os.WriteFile(tampered, raw, 0o600)
	db, err := sql.Open(store.SQLiteDriver, "file:"+tampered)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE audit SET actor = 'officer:mallory' WHERE seq = 3`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if out, err := run(bin, "-config", cfgPath, "-restore", tampered); err == nil || !strings.Contains(out, "refused") || !strings.Contains(out, "event 3") {
		t.Fatalf("restore of an altered backup: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(fresh, "keyrack.db")); err == nil {
		t.Fatal("a refused restore left a store behind")
	}

	// The backup is older than a head saved after it: refused.
	if out, err := run(bin, "-config", cfgPath, "-restore", backup, "-since-head", headLater); err == nil || !strings.Contains(out, "refused") || !strings.Contains(out, "removed since the head was saved") {
		t.Fatalf("restore of a backup older than the saved head: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(fresh, "keyrack.db")); err == nil {
		t.Fatal("a refused restore left a store behind")
	}
	out, err = run(bin, "-config", cfgPath, "-restore", backup, "-since-head", headBefore)
	if err != nil || !strings.Contains(out, "verified") || !strings.Contains(out, "extends the saved head") {
		t.Fatalf("keyrackd -restore: %v\n%s", err, out)
	}
	if out, err := run(bin, "-config", cfgPath, "-restore", backup); err == nil || !strings.Contains(out, "already has a store") {
		t.Fatalf("a restore over a store: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(cfgPath + ".log")
			t.Logf("restored keyrackd's log:\n%s", b)
		}
	})
	// The dev token, through its SoftHSM configuration.
	startWithConfig(t, cfgPath, addr2, []string{"SOFTHSM2_CONF=" + filepath.Join(devDir, "softhsm", "softhsm2.conf")})

	// The restored appliance signs with the same token; it never saw
	// dev-2 (signed after the backup), so its sequence gives dev-2 again:
	// what a restore to an older copy means, and why issue 19's saved
	// heads matter.
	if s := registerDemoDevice(t, devDir, addr2); s != "dev-2" {
		t.Fatalf("serial after the restore %s", s)
	}
	b, err := exec.Command(cli, "-url", "http://"+addr2, "-key", filepath.Join(devDir, "officer-key"), "audit", "verify").CombinedOutput()
	if out = string(b); err != nil || !strings.Contains(out, "audit chain OK") {
		t.Fatalf("audit verify after the restore: %v\n%s", err, out)
	}
	b, err = exec.Command(cli, "-url", "http://"+addr2, "-key", filepath.Join(devDir, "officer-key"), "audit", "-limit", "1000").CombinedOutput()
	if out = string(b); err != nil || !strings.Contains(out, "store.backup") || !strings.Contains(out, "store.restore") {
		t.Fatalf("the chain does not record the backup and the restore: %v\n%s", err, out)
	}
}
