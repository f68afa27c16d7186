// Package systemd holds keyrackd's unit files; these tests check them with
// systemd's own tools and against the daemon's configuration.
package systemd

import (
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/softhsm"
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

// TestTokenUnit: the token's own service (keyrack-token.service) passes
// systemd's checks, and it and keyrackd's drop-in agree: the socket the
// server makes is the one keyrackd's client dials, only the client user
// may connect, the client joins the socket directory's group, and
// keyrackd cannot reach the token's configuration or store.
func TestTokenUnit(t *testing.T) {
	if out, err := exec.Command("systemd-analyze", "verify", "./keyrack-token.service").CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("systemd-analyze verify keyrack-token.service: %v\n%s", err, out)
	}
	if level := exposure(t, "", "keyrack-token.service"); level > 2.0 {
		t.Fatalf("token unit exposure level %.1f, want 2.0 or lower", level)
	}
	unit := readUnit(t, "keyrack-token.service")
	dropIn := readUnit(t, "keyrackd.service.d/remote-token.conf.example")
	execStart := unit["ExecStart"]
	if len(execStart) != 1 {
		t.Fatalf("ExecStart %q", execStart)
	}
	args := strings.Fields(execStart[0])
	flag := func(name string) string {
		for i, a := range args {
			if a == name && i+1 < len(args) {
				return args[i+1]
			}
		}
		t.Fatalf("ExecStart lacks %s: %q", name, execStart[0])
		return ""
	}
	if !slices.Contains(softhsm.ServerCandidates, args[0]) {
		t.Errorf("ExecStart runs %s, not p11-kit-server where Debian puts it", args[0])
	}
	if !slices.Contains(softhsm.ModuleCandidates, flag("--provider")) {
		t.Errorf("provider %s is not a SoftHSM library path", flag("--provider"))
	}
	sock := flag("-n")
	if want := "/run/" + one(t, unit, "RuntimeDirectory") + "/"; !strings.HasPrefix(sock, want) {
		t.Errorf("socket %s is not in the RuntimeDirectory %s", sock, want)
	}
	if got := one(t, dropIn, "Environment"); got != softhsm.ClientAddressEnv+"=unix:path="+sock {
		t.Errorf("keyrackd's drop-in sets %q, the server listens on %s", got, sock)
	}
	// p11-kit-server gives the socket mode 0711 to the -u user: that must
	// be keyrackd's user, and the directory's group one keyrackd joins.
	daemon := readUnit(t, "keyrackd.service")
	if flag("-u") != one(t, daemon, "User") {
		t.Errorf("socket handed to %s, keyrackd runs as %s", flag("-u"), one(t, daemon, "User"))
	}
	group := one(t, unit, "Group")
	if flag("-g") != group || one(t, dropIn, "SupplementaryGroups") != group || one(t, unit, "RuntimeDirectoryMode") != "0750" {
		t.Errorf("socket group %s, unit group %s, keyrackd joins %s, directory mode %s",
			flag("-g"), group, one(t, dropIn, "SupplementaryGroups"), one(t, unit, "RuntimeDirectoryMode"))
	}
	if one(t, unit, "User") == one(t, daemon, "User") {
		t.Error("the token process runs as keyrackd's user")
	}
	// The token's files: private to its user, and hidden from keyrackd.
	hidden := strings.Fields(one(t, dropIn, "InaccessiblePaths"))
	for _, d := range []string{"StateDirectory", "ConfigurationDirectory"} {
		if one(t, unit, d+"Mode") != "0700" {
			t.Errorf("%sMode=%s, want 0700", d, one(t, unit, d+"Mode"))
		}
		base := "/var/lib/"
		if d == "ConfigurationDirectory" {
			base = "/etc/"
		}
		if p := "-" + base + one(t, unit, d); !slices.Contains(hidden, p) {
			t.Errorf("keyrackd's drop-in does not hide %s (InaccessiblePaths=%q)", p, hidden)
		}
	}
	sysusers, err := os.ReadFile("keyrack-token.sysusers")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(sysusers), "\nm "+one(t, daemon, "User")+" "+group+"\n") {
		t.Errorf("keyrack-token.sysusers does not put %s in group %s", one(t, daemon, "User"), group)
	}

	// keyrackd with the drop-in applied, as systemd would read it.
	root := t.TempDir()
	dir := root + "/etc/systemd/system/keyrackd.service.d"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{"keyrackd.service": root + "/etc/systemd/system/keyrackd.service",
		"keyrackd.service.d/remote-token.conf.example": dir + "/remote-token.conf"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if level := exposure(t, root, "keyrackd.service"); level > 2.0 {
		t.Fatalf("keyrackd with the remote-token drop-in: exposure level %.1f, want 2.0 or lower", level)
	}
}

// exposure runs systemd-analyze security offline on unit (under root when
// set) and returns its overall exposure level.
func exposure(t *testing.T, root, unit string) float64 {
	t.Helper()
	args := []string{"security", "--offline=true"}
	name := unit
	if root != "" {
		args = append(args, "--root="+root)
	} else {
		name = "./" + unit
	}
	out, err := exec.Command("systemd-analyze", append(args, name)...).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze %v: %v\n%s", args, err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for ` + regexp.QuoteMeta(unit) + `: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	level, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("%s (root %q): exposure level %.1f", unit, root, level)
	return level
}

// readUnit returns a unit file's settings, key to values in order.
func readUnit(t *testing.T, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	kv := map[string][]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			kv[k] = append(kv[k], v)
		}
	}
	return kv
}

// one returns the single value of key.
func one(t *testing.T, kv map[string][]string, key string) string {
	t.Helper()
	if len(kv[key]) != 1 {
		t.Fatalf("%s set %d times: %q", key, len(kv[key]), kv[key])
	}
	return kv[key][0]
}
