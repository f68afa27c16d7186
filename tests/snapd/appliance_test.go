package snapd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/snapcore/snapd/asserts"
)

// The demo data a dev appliance makes on its first start (appliance/demo.go).
const (
	brandID   = "dev-brand"
	modelID   = "dev-model"
	serialKey = "dev-serial"
)

// appliance is a keyrackd started with -dev in a temp dir, as `make run`
// starts one, with the keyrack CLI built from the same tree.
type appliance struct {
	dir    string // the -dev directory: token, config, demo keys
	url    string // http://127.0.0.1:PORT
	cli    string // path of the keyrack binary
	apiKey string // dev-line's api-key, the device-service key a gadget carries
	// signingKey is dev-signer's: a signing client's, for the model
	// assertion (a device-service key obtains request-ids and serials
	// only). Neither is logged.
	signingKey string
}

// repoRoot is the keyrack module this test module sits in (tests/snapd).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil || !bytes.HasPrefix(gomod, []byte("module github.com/keyrack/keyrack\n")) {
		t.Fatalf("%s is not the keyrack module (run the test from tests/snapd): %v", root, err)
	}
	return root
}

// buildKeyrack builds keyrackd and keyrack from the repository into dir,
// with the same toolchain and cgo setting the root build uses (the
// PKCS#11 binding needs cgo, so CGO_ENABLED is left as the environment has
// it).
func buildKeyrack(t *testing.T, dir string) (daemon, cli string) {
	t.Helper()
	root := repoRoot(t)
	daemon, cli = filepath.Join(dir, "keyrackd"), filepath.Join(dir, "keyrack")
	for out, pkg := range map[string]string{daemon: "./cmd/keyrackd", cli: "./cmd/keyrack"} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	return daemon, cli
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// startAppliance builds and starts a dev keyrackd and waits until its
// health answers ok. The daemon is stopped when the test ends; if the test
// failed, its log is printed.
func startAppliance(t *testing.T) *appliance {
	t.Helper()
	bin := t.TempDir()
	daemon, cli := buildKeyrack(t, bin)
	dir := filepath.Join(t.TempDir(), "dev")
	addr := freeAddr(t)
	logPath := filepath.Join(bin, "keyrackd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(daemon, "-dev", dir, "-listen", addr)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("keyrackd log:\n%s", b)
		}
	})

	a := &appliance{dir: dir, url: "http://" + addr, cli: cli}
	// The first start makes the token and generates an RSA-4096 key in
	// it, which takes a while on a busy machine.
	deadline := time.After(3 * time.Minute)
	for {
		resp, err := http.Get(a.url + "/v1/health")
		if err == nil {
			var h struct {
				Status string `json:"status"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			if resp.StatusCode == 200 && h.Status == "ok" {
				break
			}
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("keyrackd exited before it was healthy: %v", err)
		case <-deadline:
			t.Fatalf("keyrackd not healthy after 3 minutes (last error: %v)", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	key, err := os.ReadFile(filepath.Join(dir, "api-key"))
	if err != nil {
		t.Fatal(err)
	}
	a.apiKey = strings.TrimSpace(string(key))
	if key, err = os.ReadFile(filepath.Join(dir, "signing-key")); err != nil {
		t.Fatal(err)
	}
	a.signingKey = strings.TrimSpace(string(key))
	return a
}

// keyrack runs the CLI as the demo officer and returns its standard output.
func (a *appliance) keyrack(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(a.cli, args...)
	cmd.Env = append(os.Environ(), "KEYRACK_URL="+a.url, "KEYRACK_OFFICER_KEY="+filepath.Join(a.dir, "officer-key"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("keyrack %s: %v\n%s%s", strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.String()
}

// exportedKey is what `keyrack keys export` gives for registering the
// serial key with a store: its public key (from the account-key-request
// the token signed) and the constraints matching its roles.
type exportedKey struct {
	publicKey   asserts.PublicKey
	body        []byte // the public key in account-key body encoding
	constraints []any
}

func (a *appliance) exportKey(t *testing.T, name string) exportedKey {
	t.Helper()
	akrFile := filepath.Join(t.TempDir(), "akr")
	out := a.keyrack(t, "keys", "export", name, "-account-id", brandID, "-o", akrFile)
	b, err := os.ReadFile(akrFile)
	if err != nil {
		t.Fatal(err)
	}
	decoded, err := asserts.Decode(b)
	if err != nil {
		t.Fatalf("the exported account-key-request does not decode: %v", err)
	}
	akr, ok := decoded.(*asserts.AccountKeyRequest)
	if !ok {
		t.Fatalf("keys export wrote a %s, not an account-key-request", decoded.Type().Name)
	}
	pub, err := asserts.DecodePublicKey(akr.Body())
	if err != nil || pub.ID() != akr.PublicKeyID() {
		t.Fatalf("account-key-request public key: %v (id %s)", err, akr.PublicKeyID())
	}
	// The request is self-signed by the key: checking it proves the public
	// key is the token's.
	if err := asserts.SignatureCheck(akr, pub); err != nil {
		t.Fatalf("account-key-request signature: %v", err)
	}
	k := exportedKey{publicKey: pub, body: akr.Body()}
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "constraints "); ok {
			if err := json.Unmarshal([]byte(rest), &k.constraints); err != nil {
				t.Fatalf("constraints line %q: %v", line, err)
			}
		}
	}
	return k
}

// signModel has the officers approve headers as the model's template
// (keyrack models template, a ceremony: the dev appliance's quorum is 1),
// then asks the appliance, as a factory line does, for the template's
// signature: model assertions come only from templates.
func (a *appliance) signModel(t *testing.T, headers map[string]any) *asserts.Model {
	t.Helper()
	statement, _ := json.Marshal(headers)
	file := filepath.Join(t.TempDir(), "model.json")
	if err := os.WriteFile(file, statement, 0o644); err != nil {
		t.Fatal(err)
	}
	a.keyrack(t, "-yes", "models", "template", headers["brand-id"].(string), headers["model"].(string), "-file", file)
	body, _ := json.Marshal(map[string]any{"model": headers["model"]})
	req, _ := http.NewRequest("POST", a.url+"/v1/model", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("api-key", a.signingKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("POST /v1/model: %s: %s", resp.Status, b)
	}
	got, err := asserts.Decode(b)
	if err != nil {
		t.Fatalf("POST /v1/model answer: %v", err)
	}
	m, ok := got.(*asserts.Model)
	if !ok {
		t.Fatalf("POST /v1/model gave a %s", got.Type().Name)
	}
	return m
}

// exchange is one request snapd made to the device service and the
// appliance's answer, as they crossed the recorder.
type exchange struct {
	path        string
	reqHeader   http.Header
	reqBody     []byte
	status      int
	contentType string
	body        []byte
	dropped     bool // the answer was never delivered to snapd
}

// serialRequest decodes the serial-request snapd sent in a /v1/serial body.
func (x exchange) serialRequest(t *testing.T) *asserts.SerialRequest {
	t.Helper()
	a, err := asserts.NewDecoder(bytes.NewReader(x.reqBody)).Decode()
	if err != nil {
		t.Fatalf("the body of %s does not decode: %v", x.path, err)
	}
	sr, ok := a.(*asserts.SerialRequest)
	if !ok {
		t.Fatalf("%s body starts with a %s", x.path, a.Type().Name)
	}
	return sr
}

// assertions decodes an answer's assertion stream.
func (x exchange) assertions(t *testing.T) []asserts.Assertion {
	t.Helper()
	var as []asserts.Assertion
	dec := asserts.NewDecoder(bytes.NewReader(x.body))
	for {
		a, err := dec.Decode()
		if errors.Is(err, io.EOF) {
			return as
		}
		if err != nil {
			t.Fatalf("answer to %s: %v", x.path, err)
		}
		as = append(as, a)
	}
}

// message is the top-level "message" of a JSON error answer.
func (x exchange) message(t *testing.T) string {
	t.Helper()
	var e struct {
		Message string `json:"message"`
	}
	if err := json.Unmarshal(x.body, &e); err != nil || e.Message == "" {
		t.Fatalf("answer to %s (%d, %s) has no top-level message: %v: %s", x.path, x.status, x.contentType, err, x.body)
	}
	return e.Message
}

// recorder sits between snapd and the appliance. It passes every request
// and answer through unchanged and keeps a copy, so the test can compare
// what snapd reports with what the appliance said. dropNextSerial makes it
// lose one /v1/serial answer after the appliance gave it: the connection
// is closed without a byte of the answer, as when a network drops.
type recorder struct {
	target string
	client *http.Client

	mu             sync.Mutex
	log            []exchange
	dropNextSerial bool
}

func newRecorder(t *testing.T, target string) (*recorder, string) {
	t.Helper()
	r := &recorder{target: target, client: &http.Client{Timeout: time.Minute}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: r}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return r, "http://" + l.Addr().String()
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, in *http.Request) {
	reqBody, err := io.ReadAll(in.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := http.NewRequestWithContext(ctx, in.Method, r.target+in.URL.RequestURI(), bytes.NewReader(reqBody))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	out.Header = in.Header.Clone()
	resp, err := r.client.Do(out)
	if err != nil {
		// Not the appliance's answer: make it obvious in snapd's error.
		http.Error(w, "recorder: "+err.Error(), http.StatusBadGateway)
		return
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		http.Error(w, "recorder: "+err.Error(), http.StatusBadGateway)
		return
	}
	x := exchange{path: in.URL.Path, reqHeader: in.Header.Clone(), reqBody: reqBody,
		status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: body}
	r.mu.Lock()
	if r.dropNextSerial && in.URL.Path == "/v1/serial" {
		r.dropNextSerial = false
		x.dropped = true
	}
	r.log = append(r.log, x)
	r.mu.Unlock()
	if x.dropped {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler) // closes the connection too
	}
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body)
}

// exchanges returns the recorded exchanges for path since index from.
func (r *recorder) exchanges(from int, path string) []exchange {
	r.mu.Lock()
	defer r.mu.Unlock()
	var xs []exchange
	for _, x := range r.log[min(from, len(r.log)):] {
		if x.path == path {
			xs = append(xs, x)
		}
	}
	return xs
}

func (r *recorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.log)
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, x := range r.log {
		fmt.Fprintf(&b, "%s -> %d %s dropped=%v\n", x.path, x.status, x.contentType, x.dropped)
	}
	return b.String()
}
