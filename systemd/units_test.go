// Package systemd holds keyrackd's unit files; these tests check them with
// systemd's own tools and against the daemon's configuration.
package systemd

import (
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/keyrack/keyrack/appliance"
)

func TestSecurityExposure(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze is needed (package systemd)")
	}
	out, err := exec.Command("systemd-analyze", "security", "--offline=true", "keyrackd.service").CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for keyrackd.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	level, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("exposure level %.1f", level)
	if level > 2.0 {
		t.Fatalf("exposure level %.1f, want 2.0 or lower:\n%s", level, out)
	}
}

func TestUnitMatchesDaemon(t *testing.T) {
	unit, err := os.ReadFile("keyrackd.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=notify", "WatchdogSec=", "LoadCredential=token-pin:", "User=keyrack",
		"ExecStart=/usr/bin/keyrackd -config /etc/keyrack/keyrackd.json"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	// The example configuration is valid and reads the PIN from the
	// credential the unit loads.
	cfg, err := appliance.LoadConfig("keyrackd.json.example")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Token.PINCredential != "token-pin" || cfg.Officers.Quorum < 2 || cfg.Dev {
		t.Fatalf("example config: %+v", cfg)
	}
	for _, f := range []string{"keyrack.sysusers", "keyrack.tmpfiles", "keyrackd.socket"} {
		if _, err := os.Stat(f); err != nil {
			t.Error(err)
		}
	}
}

// TestSoftHSMDropInAllowsIdleSigning: the unit's system call filter refuses
// sched_setattr (it is in @resources), so the SoftHSM drop-in must allow it
// back for token.signing_priority "idle", and nothing else of @resources.
func TestSoftHSMDropInAllowsIdleSigning(t *testing.T) {
	out, err := exec.Command("systemd-analyze", "syscall-filter", "@resources").CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`(?m)^\s+sched_setattr$`).Match(out) {
		t.Fatalf("sched_setattr is not in @resources here:\n%s", out)
	}
	unit, err := os.ReadFile("keyrackd.service")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "SystemCallFilter=~@privileged @resources") {
		t.Fatal("the unit no longer refuses @resources; revisit the SoftHSM drop-in")
	}
	dropIn, err := os.ReadFile("keyrackd.service.d/softhsm.conf.example")
	if err != nil {
		t.Fatal(err)
	}
	var allowed []string
	for _, l := range strings.Split(string(dropIn), "\n") {
		if v, ok := strings.CutPrefix(l, "SystemCallFilter="); ok {
			allowed = append(allowed, v)
		}
	}
	if len(allowed) != 1 || allowed[0] != "sched_setattr" {
		t.Fatalf("SoftHSM drop-in system call filter lines %q, want exactly sched_setattr", allowed)
	}
}
