package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/keyrack/keyrack/appliance/officerkey"
	"github.com/keyrack/keyrack/appliance/wire"
	"github.com/keyrack/keyrack/softhsm"
)

// TestDaemonDevLifecycle runs the real binary in dev mode as systemd would
// (a notify socket), checks health, stops it with SIGTERM, starts it again
// and checks that the dev token and its demo key were reused.
func TestDaemonDevLifecycle(t *testing.T) {
	work := t.TempDir()
	bin := keyrackdBinary(t)
	devDir := filepath.Join(work, "dev")
	addr := freeAddr(t)

	first := startDaemon(t, bin, devDir, addr)
	waitHealthy(t, addr)
	first.stop(t)
	keyID1 := first.demoKeyID(t, true)

	second := startDaemon(t, bin, devDir, addr)
	waitHealthy(t, addr)
	second.stop(t)
	if keyID2 := second.demoKeyID(t, false); keyID2 != keyID1 {
		t.Fatalf("restart made a new demo key: %s then %s", keyID1, keyID2)
	}
	for _, f := range []string{"keyrackd.json", "softhsm/user-pin", "softhsm/so-pin", "officer-key"} {
		fi, err := os.Stat(filepath.Join(devDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	pin, _ := os.ReadFile(filepath.Join(devDir, "softhsm/user-pin"))
	if strings.Contains(first.log+second.log, string(pin)) {
		t.Fatal("the daemon logged the PIN")
	}
	if strings.Contains(first.log+second.log, "PRIVATE KEY") {
		t.Fatal("the daemon logged the demo officer's key")
	}
}

// TestBootstrapOfficersWithKeys: -bootstrap-officers NAME=PUBKEYFILE,...
// enrols the first officers with the public keys they made, prints their
// fingerprints and nothing secret, refuses the old names-only form, fewer
// officers than the quorum and a second bootstrap; the officers then log
// in with their keys. carol=carol.pub:carol.crt also binds carol's client
// certificate, whose SHA-256 is printed; a certificate file without a
// certificate is refused.
func TestBootstrapOfficersWithKeys(t *testing.T) {
	work := t.TempDir()
	tok, err := softhsm.Create(filepath.Join(work, "token"), "bootstrap")
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	b, _ := json.Marshal(map[string]any{"listen": addr, "state_dir": work, "officers": map[string]any{"quorum": 2},
		"token": map[string]any{"module": tok.Module, "label": tok.Label, "pin_file": tok.PINFile}})
	cfg := filepath.Join(work, "keyrackd.json")
	if err := os.WriteFile(cfg, b, 0o600); err != nil {
		t.Fatal(err)
	}
	signers := map[string]ssh.Signer{}
	fps := map[string]string{}
	for _, name := range []string{"alice", "bob", "carol"} {
		priv, pub, err := officerkey.Generate(name, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(work, name+".pub"), pub, 0o644); err != nil {
			t.Fatal(err)
		}
		if signers[name], err = officerkey.LoadSigner(priv, nil); err != nil {
			t.Fatal(err)
		}
		fps[name] = officerkey.Fingerprint(signers[name].PublicKey())
	}
	bootstrap := func(arg string) (int, string) {
		t.Helper()
		cmd := exec.Command(keyrackdBinary(t), "-config", cfg, "-bootstrap-officers", arg)
		cmd.Env = append(os.Environ(), tok.Env()...)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	pub := func(name string) string { return name + "=" + filepath.Join(work, name+".pub") }
	if code, out := bootstrap("alice,bob,carol"); code != 2 || !strings.Contains(out, "NAME=PUBKEYFILE") {
		t.Fatalf("names without keys: %d %s", code, out)
	}
	certFile, certSum := selfSignedCert(t, work, "carol")
	if code, out := bootstrap(pub("alice") + "," + pub("carol") + ":"); code != 2 || !strings.Contains(out, "NAME=PUBKEYFILE[:CERTFILE]") {
		t.Fatalf("an empty certificate file name: %d %s", code, out)
	}
	if code, out := bootstrap(pub("alice") + "," + pub("carol") + ":" + filepath.Join(work, "carol.pub")); code != 2 || !strings.Contains(out, "no PEM CERTIFICATE block") {
		t.Fatalf("a certificate file without a certificate: %d %s", code, out)
	}
	if code, out := bootstrap(pub("alice")); code != 1 || !strings.Contains(out, "fewer officers than the quorum") {
		t.Fatalf("one officer for a quorum of 2: %d %s", code, out)
	}
	code, out := bootstrap(strings.Join([]string{pub("alice"), pub("bob"), pub("carol") + ":" + certFile}, ","))
	if code != 0 || strings.Contains(out, "PRIVATE KEY") || strings.Contains(out, "krk_") {
		t.Fatalf("bootstrap: %d %s", code, out)
	}
	for name, fp := range fps {
		want := name + "\t" + fp + "\n"
		if name == "carol" {
			want = name + "\t" + fp + "\tclient certificate sha256 " + certSum + "\n"
		}
		if !strings.Contains(out, want) {
			t.Errorf("bootstrap output lacks %q:\n%s", want, out)
		}
	}
	if code, out := bootstrap(pub("alice") + "," + pub("bob")); code != 1 || !strings.Contains(out, "already has officers") {
		t.Fatalf("second bootstrap: %d %s", code, out)
	}

	startWithConfig(t, cfg, addr, tok.Env())
	var list wire.OfficerList
	if code := login(t, addr, signers["bob"]).do("GET", "/v1/officers", nil, &list); code != http.StatusOK || len(list.Officers) != 3 {
		t.Fatalf("officers as bob: %d %+v", code, list)
	}
	for _, o := range list.Officers {
		if o.KeyFP != fps[o.Name] {
			t.Errorf("officer %s has key %s, not %s", o.Name, o.KeyFP, fps[o.Name])
		}
	}
}

// TestWatchdogFollowsToken runs keyrackd with a systemd watchdog: it pings
// while the token answers, stops while the token is gone, and resumes.
func TestWatchdogFollowsToken(t *testing.T) {
	work := t.TempDir()
	bin := keyrackdBinary(t)
	devDir := filepath.Join(work, "dev")
	d := startDaemon(t, bin, devDir, freeAddr(t), "WATCHDOG_USEC=600000")
	pings := func(window time.Duration) int {
		n := 0
		deadline := time.Now().Add(window)
		buf := make([]byte, 256)
		for time.Now().Before(deadline) {
			d.notify.SetReadDeadline(deadline)
			k, err := d.notify.Read(buf)
			if err != nil {
				break
			}
			if strings.TrimSpace(string(buf[:k])) == "WATCHDOG=1" {
				n++
			}
		}
		return n
	}
	if n := pings(time.Second); n < 2 {
		t.Fatalf("%d watchdog pings in 1s with the token up", n)
	}
	tokens := filepath.Join(devDir, "softhsm", "tokens")
	if err := os.Rename(tokens, tokens+".away"); err != nil {
		t.Fatal(err)
	}
	pings(400 * time.Millisecond) // a ping already on its way may arrive
	if n := pings(1500 * time.Millisecond); n != 0 {
		t.Fatalf("%d watchdog pings with the token gone", n)
	}
	if err := os.Rename(tokens+".away", tokens); err != nil {
		t.Fatal(err)
	}
	if n := pings(3 * time.Second); n < 1 {
		t.Fatalf("watchdog pings did not resume after the token came back\n%s", d.readLog(t))
	}
	d.stop(t)
	if !strings.Contains(d.log, "withholding the watchdog ping") {
		t.Error("the daemon did not log why it withheld the ping")
	}
}

func TestDaemonRefusesBadConfig(t *testing.T) {
	work := t.TempDir()
	cfg := filepath.Join(work, "bad.json")
	os.WriteFile(cfg, []byte(`{"token": {"module": "/nonexistent.so", "label": "x", "pin_file": "/p"}, "typo": 1}`), 0o600)
	out, err := exec.Command(keyrackdBinary(t), "-config", cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `unknown field \"typo\"`) {
		t.Fatalf("bad config: err=%v\n%s", err, out)
	}
}

type daemonProc struct {
	cmd    *exec.Cmd
	notify *net.UnixConn
	logf   string
	log    string
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startDaemon(t *testing.T, bin, devDir, addr string, env ...string) *daemonProc {
	t.Helper()
	return startDaemonArgs(t, bin, devDir, addr, nil, env...)
}

// startDaemonArgs is startDaemon with more flags for keyrackd.
func startDaemonArgs(t *testing.T, bin, devDir, addr string, args []string, env ...string) *daemonProc {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	logf := filepath.Join(t.TempDir(), "keyrackd.log")
	lf, err := os.Create(logf)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"-dev", devDir, "-listen", addr}, args...)...)
	cmd.Env = append(append(os.Environ(), "NOTIFY_SOCKET="+sock), env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lf.Close()
	d := &daemonProc{cmd: cmd, notify: conn, logf: logf}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		conn.Close()
	})
	if msg := d.nextNotify(t, 60*time.Second); msg != "READY=1" {
		t.Fatalf("first sd_notify message %q, want READY=1; log:\n%s", msg, d.readLog(t))
	}
	return d
}

func (d *daemonProc) nextNotify(t *testing.T, within time.Duration) string {
	t.Helper()
	buf := make([]byte, 4096)
	d.notify.SetReadDeadline(time.Now().Add(within))
	n, err := d.notify.Read(buf)
	if err != nil {
		t.Fatalf("reading sd_notify: %v; log:\n%s", err, d.readLog(t))
	}
	return strings.TrimSpace(string(buf[:n]))
}

func (d *daemonProc) readLog(t *testing.T) string {
	b, _ := os.ReadFile(d.logf)
	return string(b)
}

func (d *daemonProc) stop(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if msg := d.nextNotify(t, 20*time.Second); msg != "STOPPING=1" {
		t.Fatalf("after SIGTERM sd_notify said %q, want STOPPING=1", msg)
	}
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("keyrackd exited with %v; log:\n%s", err, d.readLog(t))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("keyrackd did not exit after SIGTERM")
	}
	d.log = d.readLog(t)
	if !strings.Contains(d.log, "stopped cleanly") {
		t.Fatalf("no clean stop in log:\n%s", d.log)
	}
}

// demoKeyID returns the demo key id the daemon logged, checking whether it
// said it created the key.
func (d *daemonProc) demoKeyID(t *testing.T, wantCreated bool) string {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(d.log))
	for sc.Scan() {
		var line struct {
			Msg     string `json:"msg"`
			KeyID   string `json:"key_id"`
			Created bool   `json:"created"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "demo data" {
			if line.Created != wantCreated {
				t.Fatalf("demo key created=%v, want %v", line.Created, wantCreated)
			}
			return line.KeyID
		}
	}
	t.Fatalf("no demo data line in log:\n%s", d.log)
	return ""
}

func waitHealthy(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(fmt.Sprintf("http://%s/v1/health", addr))
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && strings.Contains(string(body), `"status":"ok"`) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("keyrackd at %s never became healthy: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// selfSignedCert writes a self-signed certificate to dir/NAME.crt, after
// another PEM block (a certificate file may carry its key first), and
// returns its path and the SHA-256 of its DER.
func selfSignedCert(t *testing.T, dir, name string) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "officer " + name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PARAMETERS", Bytes: []byte{0}})
	data = append(data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	path := filepath.Join(dir, name+".crt")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return path, hex.EncodeToString(sum[:])
}
