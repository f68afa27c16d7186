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
