package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/assertion"
	"github.com/keyrack/keyrack/appliance/httpapi"
	"github.com/keyrack/keyrack/appliance/keyfile"
	"github.com/keyrack/keyrack/appliance/keyfile/keyfiletest"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/hsm"
	"github.com/keyrack/keyrack/softhsm"
)

type env struct {
	t     *testing.T
	url   string
	mod   *hsm.Module
	dir   string
	files map[string]string // officer -> credential file
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	tok, err := softhsm.Create(filepath.Join(dir, "token"), "cli-test")
	if err != nil {
		t.Fatal(err)
	}
	mod, err := hsm.Open(tok.Config())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mod.Close() })
	cfg, err := appliance.ParseConfig(strings.NewReader(fmt.Sprintf(
		`{"state_dir": %q, "officers": {"quorum": 2}, "token": {"module": %q, "label": %q, "pin_file": %q}}`,
		dir, tok.Module, tok.Label, tok.PINFile)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	db, err := store.OpenSQLite(ctx, cfg.Store.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	creds, err := appliance.BootstrapOfficers(ctx, db, []string{"alice", "bob"})
	if err != nil {
		t.Fatal(err)
	}
	app, err := appliance.New(ctx, cfg, mod, db, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(httpapi.New(app).Handler())
	t.Cleanup(ts.Close)
	e := &env{t: t, url: ts.URL, mod: mod, dir: dir, files: map[string]string{}}
	for name, c := range creds {
		f := filepath.Join(dir, name+".token")
		os.WriteFile(f, []byte(c), 0o600)
		e.files[name] = f
	}
	return e
}

// keyrack runs the CLI as officer ("" for none) and returns exit code and
// output.
func (e *env) keyrack(officer string, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	full := []string{"-url", e.url}
	if officer != "" {
		full = append(full, "-token-file", e.files[officer])
	}
	code := run(append(full, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func TestWrapImportApproveSign(t *testing.T) {
	e := newEnv(t)
	// The brand key, made outside the appliance as `snap create-key` does.
	armored := keyfiletest.GPGExport(t, 4096, "")
	keyFile := filepath.Join(e.dir, "brand.asc")
	os.WriteFile(keyFile, armored, 0o600)
	orig, _, err := keyfile.Parse(armored, 4096)
	if err != nil {
		t.Fatal(err)
	}

	code, out, errs := e.keyrack("", "import-key", "-o", filepath.Join(e.dir, "import.pem"))
	if code != 0 {
		t.Fatalf("import-key: %d %s %s", code, out, errs)
	}
	fp := regexp.MustCompile(`fingerprint \(sha256\) ([0-9a-f]{64})`).FindStringSubmatch(out)
	if fp == nil {
		t.Fatalf("no fingerprint in %q", out)
	}
	blob := filepath.Join(e.dir, "brand.blob")
	wrapArgs := func(fingerprint string) []string {
		return []string{"wrap", "-import-key", filepath.Join(e.dir, "import.pem"), "-fingerprint", fingerprint, "-in", keyFile, "-out", blob}
	}
	if code, _, errs := e.keyrack("", wrapArgs(strings.Repeat("ab", 32))...); code != 1 || !strings.Contains(errs, "refusing to wrap") {
		t.Fatalf("wrap to an unconfirmed key: %d %s", code, errs)
	}
	if code, out, errs := e.keyrack("", wrapArgs(fp[1])...); code != 0 || !strings.Contains(out, "RSA-4096") {
		t.Fatalf("wrap: %d %s %s", code, out, errs)
	}
	if code, _, errs := e.keyrack("", wrapArgs(fp[1])...); code != 1 || !strings.Contains(errs, "refusing to overwrite") {
		t.Fatalf("second wrap over the blob: %d %s", code, errs)
	}

	code, out, errs = e.keyrack("alice", "keys", "import", "brand-serial", "-blob", blob, "-role", "serial=foo-.*")
	if code != 0 || !strings.Contains(out, "state      pending (1 of 2 approvals: alice)") {
		t.Fatalf("import proposal: %d\n%s\n%s", code, out, errs)
	}
	id := regexp.MustCompile(`keyrack approve ([0-9a-f]+)`).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("no approve hint in %q", out)
	}
	if code, _, errs := e.keyrack("alice", "approve", id[1]); code != 1 || !strings.Contains(errs, "already approved") {
		t.Fatalf("self-approval: %d %s", code, errs)
	}
	code, out, errs = e.keyrack("bob", "approve", id[1])
	if code != 0 || !strings.Contains(out, "state      executed") {
		t.Fatalf("approval: %d\n%s\n%s", code, out, errs)
	}
	code, out, _ = e.keyrack("bob", "keys")
	if code != 0 || !regexp.MustCompile(`brand-serial\s+active\s+imported\s+4096`).MatchString(out) {
		t.Fatalf("keys list:\n%s", out)
	}

	// The imported key signs a serial that verifies with the original key.
	k, err := e.mod.FindKeyByLabel(context.Background(), "brand-serial")
	if err != nil {
		t.Fatal(err)
	}
	if i := k.Info(); !i.Sensitive || i.Extractable || i.Local || !i.Sign || i.Decrypt {
		t.Fatalf("token object %+v", i)
	}
	s, err := assertion.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	dev, _, _ := keyfile.Parse(armored, 4096) // any RSA key will do as a device key
	sg, err := s.Serial(assertion.Serial{BrandID: "brand-x", Model: "foo-1", Serial: "SN1",
		DeviceKey: asserts.RSAPublicKey(&dev.PublicKey), Timestamp: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if err := asserts.SignatureCheck(sg.Assertion, asserts.RSAPublicKey(&orig.PublicKey)); err != nil {
		t.Fatalf("serial does not verify with the original public key: %v", err)
	}

	// A passphrase-protected upload is refused with a message that says so.
	locked := filepath.Join(e.dir, "locked.asc")
	os.WriteFile(locked, keyfiletest.GPGExport(t, 4096, "pass phrase"), 0o600)
	code, _, errs = e.keyrack("alice", "keys", "upload", "locked", "-key", locked, "-role", "serial")
	if code != 1 || !strings.Contains(errs, "protected by a passphrase") {
		t.Fatalf("passphrase upload: %d %s", code, errs)
	}
	// Audit shows the ceremony, and its chain verifies.
	code, out, _ = e.keyrack("bob", "audit")
	for _, want := range []string{"officer:alice\tproposal.create", "officer:bob\tproposal.approve", "officer:bob\tkey.import\tbrand-serial\tok"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("audit lacks %q:\n%s", want, out)
		}
	}
	if code, out, errs := e.keyrack("bob", "audit", "verify"); code != 0 || !strings.Contains(out, "audit chain OK") {
		t.Fatalf("audit verify over the API: %d %s %s", code, out, errs)
	}
}

// TestAuditVerifyNamesAlteredEvent alters one audit event in the store
// file and checks that keyrack audit verify names it, from the file and
// through the API.
func TestAuditVerifyNamesAlteredEvent(t *testing.T) {
	e := newEnv(t)
	for _, name := range []string{"a-key", "b-key"} {
		_, out, _ := e.keyrack("alice", "keys", "generate", name, "-role", "serial")
		id := regexp.MustCompile(`keyrack approve ([0-9a-f]+)`).FindStringSubmatch(out)
		e.keyrack("bob", "approve", id[1])
	}
	dbPath := filepath.Join(e.dir, "keyrack.db")
	if code, out, errs := e.keyrack("", "audit", "verify", "-db", dbPath); code != 0 || !strings.Contains(out, "audit chain OK") {
		t.Fatalf("intact chain: %d %s %s", code, out, errs)
	}
	// An auditor-side edit: event 4 now says someone else approved.
	alterEvent(t, dbPath)
	code, out, _ := e.keyrack("", "audit", "verify", "-db", dbPath)
	if code != 1 || !strings.Contains(out, "BROKEN at event 4") {
		t.Fatalf("altered event, from the file: %d %s", code, out)
	}
	code, out, _ = e.keyrack("bob", "audit", "verify")
	if code != 1 || !strings.Contains(out, "BROKEN at event 4") {
		t.Fatalf("altered event, over the API: %d %s", code, out)
	}
}

func TestCLIErrors(t *testing.T) {
	e := newEnv(t)
	if code, _, _ := e.keyrack("", "bogus"); code != 2 {
		t.Errorf("unknown command: %d", code)
	}
	if code, _, errs := e.keyrack("", "keys"); code != 1 || !strings.Contains(errs, "no officer credential") {
		t.Errorf("no credential: %d %s", code, errs)
	}
	if code, _, errs := e.keyrack("alice", "keys", "generate", "x"); code != 2 || !strings.Contains(errs, "-role") {
		t.Errorf("generate without roles: %d %s", code, errs)
	}
	if code, _, errs := e.keyrack("alice", "keys", "generate", "x", "-role", "account-key"); code != 1 || !strings.Contains(errs, "unknown assertion type") {
		t.Errorf("bad role: %d %s", code, errs)
	}
	code, out, _ := e.keyrack("", "status")
	if code != 0 || !strings.Contains(out, "token      up: cli-test") {
		t.Errorf("status: %d %s", code, out)
	}
	code, out, _ = e.keyrack("alice", "officers")
	if code != 0 || !strings.Contains(out, "quorum 2") {
		t.Errorf("officers: %d %s", code, out)
	}
}

func TestModelsClientsDevice(t *testing.T) {
	e := newEnv(t)
	code, out, errs := e.keyrack("alice", "keys", "generate", "line-key", "-role", "serial=line-.*", "-role", "model=line-.*")
	if code != 0 {
		t.Fatalf("generate: %d %s %s", code, out, errs)
	}
	approve := func(out string) string {
		t.Helper()
		id := regexp.MustCompile(`keyrack approve ([0-9a-f]+)`).FindStringSubmatch(out)
		if id == nil {
			t.Fatalf("no proposal in %q", out)
		}
		code, out, errs := e.keyrack("bob", "approve", id[1])
		if code != 0 {
			t.Fatalf("approve: %d %s %s", code, out, errs)
		}
		return out
	}
	approve(out)
	_, out, _ = e.keyrack("alice", "models", "set", "brand-x", "line-7", "-key", "serial=line-key", "-key", "model=line-key", "-serial-source", "assign", "-serial-prefix", "L7-")
	approve(out)
	_, out, _ = e.keyrack("alice", "clients", "create", "line-7-client", "-brand", "brand-x", "-model", "line-7", "-type", "serial", "-type", "model")
	out = approve(out)
	cred := regexp.MustCompile(`credential (krk_c_\S+)`).FindStringSubmatch(out)
	if cred == nil {
		t.Fatalf("no client credential in %q", out)
	}
	keyFile := filepath.Join(e.dir, "api-key")
	os.WriteFile(keyFile, []byte(cred[1]), 0o600)
	code, out, errs = e.keyrack("", "device", "register", "-api-key-file", keyFile, "-brand", "brand-x", "-model", "line-7", "-bits", "2048")
	if code != 0 || !strings.Contains(out, "type: serial") || !strings.Contains(out, "serial: L7-1") {
		t.Fatalf("device register: %d\n%s\n%s", code, out, errs)
	}
	code, out, _ = e.keyrack("bob", "log", "-type", "serial", "-csv")
	if code != 0 || !strings.Contains(out, ",serial,") || !strings.Contains(out, "L7-1") {
		t.Fatalf("log: %d %s", code, out)
	}
	// A client scoped to line-7 cannot register a device of another model.
	code, _, errs = e.keyrack("", "device", "register", "-api-key-file", keyFile, "-brand", "brand-x", "-model", "line-8", "-bits", "2048")
	if code != 1 || !strings.Contains(errs, "client-model") {
		t.Fatalf("out-of-scope device: %d %s", code, errs)
	}
}

// alterEvent edits audit event 4 in the store file behind keyrack's back.
func alterEvent(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE audit SET actor = 'officer:mallory' WHERE seq = 4`); err != nil {
		t.Fatal(err)
	}
}
