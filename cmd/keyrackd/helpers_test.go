package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/officerkey"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/store/pgtest"
	"github.com/keyrack/keyrack/appliance/wire"
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

// seedDemo makes the demo data (key, model, API client, officer; the API
// key and the officer's key in work) in the PostgreSQL store dsn through an in-process
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

// officer is the demo officer talking to one appliance over HTTP: logged
// in with the key EnsureDemo wrote to work/officer-key.
type officer struct {
	t      *testing.T
	base   string
	signer ssh.Signer
	token  string
}

// demoOfficer logs the demo officer in at addr with work/officer-key.
func demoOfficer(t *testing.T, work, addr string) *officer {
	t.Helper()
	pemBytes, err := os.ReadFile(filepath.Join(work, "officer-key"))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := officerkey.LoadSigner(pemBytes, nil)
	if err != nil {
		t.Fatal(err)
	}
	return login(t, addr, signer)
}

// login logs the officer whose key signer holds in at addr.
func login(t *testing.T, addr string, signer ssh.Signer) *officer {
	t.Helper()
	o := &officer{t: t, base: "http://" + addr, signer: signer}
	var ch wire.LoginChallenge
	if code := o.do("POST", "/v1/login/challenge", wire.LoginRequest{PublicKey: officerkey.Authorized(signer.PublicKey())}, &ch); code != http.StatusOK {
		t.Fatalf("login challenge at %s: %d", addr, code)
	}
	sig, err := officerkey.Sign(signer, officerkey.DomainLogin, []byte(ch.Content))
	if err != nil {
		t.Fatal(err)
	}
	var sess wire.Session
	if code := o.do("POST", "/v1/login", wire.LoginAnswer{ID: ch.ID, Signature: sig}, &sess); code != http.StatusOK {
		t.Fatalf("login at %s: %d", addr, code)
	}
	o.token = sess.Token
	return o
}

// do sends body as JSON, with the session once there is one, and decodes
// the answer into out.
func (o *officer) do(method, path string, body, out any) int {
	o.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			o.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, o.base+path, rd)
	if err != nil {
		o.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if o.token != "" {
		req.Header.Set("Authorization", "Bearer "+o.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		o.t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

// call is do with the answer as a map.
func (o *officer) call(method, path string, body any) (int, map[string]any) {
	o.t.Helper()
	var out map[string]any
	code := o.do(method, path, body, &out)
	return code, out
}

// ceremony proposes, and when the appliance takes the proposal (202),
// signs and approves it: on these quorum-1 appliances the demo officer's
// approval carries it out. It returns the last answer: the proposal's
// when it was refused, else the approval's.
func (o *officer) ceremony(method, path string, body any) (int, map[string]any) {
	o.t.Helper()
	var raw json.RawMessage
	code := o.do(method, path, body, &raw)
	var out map[string]any
	json.Unmarshal(raw, &out)
	if code != http.StatusAccepted {
		return code, out
	}
	var ans wire.CeremonyAnswer
	if err := json.Unmarshal(raw, &ans); err != nil {
		o.t.Fatal(err)
	}
	sig, err := officerkey.Sign(o.signer, officerkey.DomainApproval, []byte(ans.Proposal.Content))
	if err != nil {
		o.t.Fatal(err)
	}
	return o.call("POST", "/v1/proposals/"+ans.Proposal.ID+"/approve", wire.ApproveRequest{Signature: sig})
}
