package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/assertion"
	"github.com/keyrack/keyrack/appliance/device"
	"github.com/keyrack/keyrack/hsm/keywrap"
	"github.com/keyrack/keyrack/softhsm"
)

// TestDevRemoteToken runs the real keyrackd as `make run TOKEN=remote`
// does (-dev -dev-token remote): the dev token is served by p11-kit-server
// in its own process and keyrackd maps p11-kit-client.so, never
// libsofthsm2.so. Then, with devices asking for serials all along, the
// token process is killed (the server and its per-connection children,
// as systemd stops a unit): requests answer 503 with Retry-After within a
// second and health says token-unavailable; a new server on the same
// socket brings signing back within 5 s, without a restart of keyrackd.
func TestDevRemoteToken(t *testing.T) {
	if _, err := softhsm.ServerPath(); err != nil {
		t.Skip(err) // only when p11-kit cannot be installed (make deps installs it)
	}
	work := t.TempDir()
	bin := keyrackdBinary(t)
	devDir := filepath.Join(work, "dev")
	addr := freeAddr(t)
	d := startDaemonArgs(t, bin, devDir, addr, []string{"-dev-token", "remote"})
	waitHealthy(t, addr)

	// What keyrackd has loaded, from the kernel's view of its memory.
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", d.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(maps, []byte("p11-kit-client.so")) {
		t.Fatalf("keyrackd does not map p11-kit-client.so:\n%s", maps)
	}
	if bytes.Contains(maps, []byte("libsofthsm2")) {
		t.Fatal("keyrackd maps libsofthsm2.so: the token's keys are in its memory")
	}
	sockDir := filepath.Join(devDir, "p11-kit")
	if fi, err := os.Stat(sockDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("socket directory %s: %v %v, want mode 0700", sockDir, fi, err)
	}
	serverPID := logged(t, d, "dev token served by p11-kit-server", "pid")
	// p11-kit-server serves each connection from a child (p11-kit-remote):
	// that child holds SoftHSM, and with it the keys.
	kids, err := os.ReadFile(fmt.Sprintf("/proc/%s/task/%s/children", serverPID, serverPID))
	if err != nil {
		t.Fatal(err)
	}
	mapsSoftHSM := false
	for _, kid := range strings.Fields(string(kids)) {
		m, _ := os.ReadFile("/proc/" + kid + "/maps")
		mapsSoftHSM = mapsSoftHSM || bytes.Contains(m, []byte("libsofthsm2"))
	}
	if !mapsSoftHSM {
		t.Fatalf("no process of the token server %s (children %q) maps SoftHSM", serverPID, kids)
	}

	read := func(f string) string {
		b, err := os.ReadFile(filepath.Join(devDir, f))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	url := "http://" + addr + "/v1/"
	cl := &device.Client{URL: url, APIKey: read("api-key")}
	model, err := (&device.Client{URL: url, APIKey: read("signing-key")}).SignModel(context.Background(), appliance.DemoModel)
	if err != nil {
		t.Fatal(err)
	}
	// A device key that already has a serial gets it back from the store
	// without a signature: every serial under load needs a fresh device.
	// One that was refused keeps its key for the next try.
	pool := make(chan *device.Device, 48)
	var gen sync.WaitGroup
	for i := 0; i < cap(pool); i++ {
		gen.Add(1)
		go func() {
			defer gen.Done()
			dv, err := device.New(appliance.DemoBrand, appliance.DemoModel, 2048)
			if err != nil {
				t.Error(err)
				return
			}
			dv.ModelAssertion = model
			pool <- dv
		}()
	}
	gen.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if _, _, err := cl.Register(context.Background(), <-pool, ""); err != nil {
		t.Fatalf("a serial through the remote token: %v", err)
	}

	// An import cannot run through this RPC (no AES key wrap crosses it):
	// the proposal is refused before any officer approves it, and
	// nothing is recorded as pending.
	o := demoOfficer(t, devDir, addr)
	_, ik := o.call("GET", "/v1/import-key", nil)
	if tm, _ := ik["token_mechanism"].(string); !strings.HasPrefix(tm, "none (") {
		t.Errorf("import key's token mechanism through the RPC: %q, want none (...)", tm)
	}
	block, _ := pem.Decode([]byte(fmt.Sprint(ik["public_key_pem"])))
	if block == nil {
		t.Fatalf("import key: %v", ik)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	brand, err := rsa.GenerateKey(rand.Reader, 4096)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(brand)
	blob, err := keywrap.Wrap(pub.(*rsa.PublicKey), der)
	if err != nil {
		t.Fatal(err)
	}
	brandID, err := assertion.KeyID(&brand.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	roles := []map[string]any{{"type": "serial", "models": []string{appliance.DemoModel}}}
	code, out := o.call("POST", "/v1/keys/import", map[string]any{"name": "imported-remote", "roles": roles, "blob": blob, "sign-key-sha3-384": brandID})
	if code != http.StatusBadRequest || out["code"] != "unsupported" {
		t.Fatalf("import proposal through the RPC: %d %v, want 400 unsupported", code, out)
	}
	t.Logf("import proposal through the RPC: %d %v", code, out["message"])

	// Load: workers asking for serials until the end, each answer timed.
	type answer struct {
		at     time.Time
		status int
		took   time.Duration
		retry  string
	}
	var mu sync.Mutex
	var answers []answer
	var stopped atomic.Bool
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var dv *device.Device
			for !stopped.Load() {
				if dv == nil {
					select {
					case dv = <-pool:
					default:
						return // out of fresh devices
					}
				}
				rid, err := cl.RequestID(context.Background())
				if err != nil {
					// Request-ids come from the store, not the token.
					t.Errorf("request-id: %v", err)
					return
				}
				req, err := dv.SerialRequest(rid, "", nil)
				if err != nil {
					t.Error(err)
					return
				}
				start := time.Now()
				status, hdr := postSerial(t, url, cl.APIKey, dv.Stream(req))
				mu.Lock()
				answers = append(answers, answer{start, status, time.Since(start), hdr.Get("Retry-After")})
				mu.Unlock()
				if status == http.StatusOK {
					// Paced so that the fresh devices last the whole
					// test (a device key is slow to make).
					dv = nil
					time.Sleep(100 * time.Millisecond)
				} else {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	defer func() { stopped.Store(true); wg.Wait() }()
	time.Sleep(500 * time.Millisecond)

	// The token process dies.
	srv, err := softhsm.NewServer(mustLoadDevToken(t, devDir), filepath.Join(sockDir, "token.sock"))
	if err != nil {
		t.Fatal(err)
	}
	pid := 0
	fmt.Sscan(serverPID, &pid)
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// Health says why, within a second.
	var health string
	for {
		code, body := getHealth(t, addr)
		if code == http.StatusServiceUnavailable && strings.Contains(body, `"reason":"token-unavailable"`) {
			health = body
			break
		}
		if time.Since(killed) > time.Second {
			t.Fatalf("health 1s after the token process died: %d %s", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	healthAfter := time.Since(killed)
	time.Sleep(1500 * time.Millisecond) // answers while the token is away

	// The token process comes back on the same socket.
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Kill()
	restarted := time.Now()
	resumed := time.Duration(0)
	for resumed == 0 {
		mu.Lock()
		for _, a := range answers {
			if a.at.After(restarted) && a.status == http.StatusOK {
				resumed = a.at.Add(a.took).Sub(restarted)
				break
			}
		}
		mu.Unlock()
		if resumed == 0 && time.Since(restarted) > 5*time.Second {
			t.Fatalf("no serial within 5s of the token process's restart (%d fresh devices left)", len(pool))
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	stopped.Store(true)
	wg.Wait()

	// Every answer that began while the token was away: 503 with
	// Retry-After, within a second. (A signature already under way when
	// the process died may still have been answered before it.)
	var downTimes []time.Duration
	before, during := 0, 0
	for _, a := range answers {
		switch {
		case a.at.Before(killed):
			if a.status == http.StatusOK {
				before++
			}
		case a.at.Before(restarted):
			during++
			if a.status != http.StatusServiceUnavailable || a.retry == "" {
				t.Errorf("with the token process dead: status %d, Retry-After %q", a.status, a.retry)
			}
			if a.took > time.Second {
				t.Errorf("a request with the token process dead took %v", a.took)
			}
			downTimes = append(downTimes, a.took)
		}
	}
	if before == 0 || during < 3 {
		t.Fatalf("load too thin to judge: %d serials before the kill, %d answers while down", before, during)
	}
	sort.Slice(downTimes, func(i, j int) bool { return downTimes[i] < downTimes[j] })
	t.Logf("%d serials signed through the remote token before the kill", before)
	t.Logf("token process killed under load: health said token-unavailable after %v (%s); %d requests while down all 503 + Retry-After, slowest %v, median %v",
		healthAfter.Round(time.Millisecond), strings.TrimSpace(health), during, downTimes[len(downTimes)-1].Round(time.Microsecond), downTimes[len(downTimes)/2].Round(time.Microsecond))
	t.Logf("token process started again on the same socket: first serial %v later (keyrackd pid %d unchanged)", resumed.Round(time.Millisecond), d.cmd.Process.Pid)
	if d.cmd.ProcessState != nil {
		t.Fatal("keyrackd exited")
	}
	d.stop(t)
	if strings.Contains(d.log, read("softhsm/user-pin")) {
		t.Fatal("the daemon logged the PIN")
	}
}

// postSerial sends one serial request stream and returns the status and
// headers (Retry-After is what the test is after).
func postSerial(t *testing.T, url, apiKey string, stream []byte) (int, http.Header) {
	req, err := http.NewRequest("POST", url+"serial", bytes.NewReader(stream))
	if err != nil {
		t.Error(err)
		return 0, nil
	}
	req.Header.Set("Content-Type", asserts.MediaType)
	req.Header.Set("api-key", apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("serial: %v", err)
		return 0, http.Header{}
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

func getHealth(t *testing.T, addr string) (int, string) {
	resp, err := http.Get("http://" + addr + "/v1/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// logged returns field of the first log line with message msg.
func logged(t *testing.T, d *daemonProc, msg, field string) string {
	t.Helper()
	for _, l := range strings.Split(d.readLog(t), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
			return fmt.Sprint(m[field])
		}
	}
	t.Fatalf("no %q line in the log:\n%s", msg, d.readLog(t))
	return ""
}

// mustLoadDevToken finds the dev token without activating it for this
// process (the test binary loads no SoftHSM for it).
func mustLoadDevToken(t *testing.T, devDir string) *softhsm.Token {
	t.Helper()
	conf := os.Getenv("SOFTHSM2_CONF")
	tok, err := softhsm.Load(filepath.Join(devDir, "softhsm"), devTokenLabel)
	os.Setenv("SOFTHSM2_CONF", conf)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
