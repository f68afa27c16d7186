package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
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
	"github.com/keyrack/keyrack/appliance/officerkey"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
	"github.com/keyrack/keyrack/hsm"
	"github.com/keyrack/keyrack/internal/testpki"
	"github.com/keyrack/keyrack/softhsm"
)

type env struct {
	t     testing.TB
	url   string
	app   *appliance.Appliance
	mod   *hsm.Module
	dir   string
	files map[string]string // officer -> private key file
	db    *store.DB         // the appliance's store, for tests that seed it
}

// clearEnv keeps the tester's own keyrack and ssh-agent settings out of
// the CLI under test.
func clearEnv(t testing.TB) {
	t.Helper()
	for _, v := range []string{"KEYRACK_URL", "KEYRACK_OFFICER_KEY", "KEYRACK_OFFICER_PUBKEY", "KEYRACK_AGENT", "KEYRACK_KEY_PASSPHRASE", "SSH_AUTH_SOCK",
		"KEYRACK_CA", "KEYRACK_CERT", "KEYRACK_CERT_KEY"} {
		t.Setenv(v, "")
	}
}

// newEnv runs an appliance (quorum 2) whose first officers, alice and bob,
// made their keys with keyrack officer keygen.
func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvWith(t, envOptions{})
}

// envOptions vary newEnv's appliance.
type envOptions struct {
	// config is added to the configuration's members (`"tls": {...}`).
	config string
	// certs binds officers to their TLS client certificates at bootstrap
	// (officer -> SHA-256 of the certificate's DER, hex).
	certs map[string]string
	// serve runs the API with httpapi's Server.Serve on a loopback
	// listener, which does TLS itself from the configuration, instead of
	// an httptest server; the URL is then https.
	serve bool
}

func newEnvWith(t testing.TB, opts envOptions) *env {
	t.Helper()
	clearEnv(t)
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
	extra := ""
	if opts.config != "" {
		extra = ", " + opts.config
	}
	cfg, err := appliance.ParseConfig(strings.NewReader(fmt.Sprintf(
		`{"state_dir": %q, "officers": {"quorum": 2}, "token": {"module": %q, "label": %q, "pin_file": %q}%s}`,
		dir, tok.Module, tok.Label, tok.PINFile, extra)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	db, err := store.OpenSQLite(ctx, cfg.Store.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e := &env{t: t, mod: mod, dir: dir, files: map[string]string{}, db: db}
	var officers []appliance.OfficerKey
	for _, name := range []string{"alice", "bob"} {
		officers = append(officers, appliance.OfficerKey{Name: name, PublicKey: e.keygen(name), CertSHA256: opts.certs[name]})
	}
	if err := appliance.BootstrapOfficers(ctx, db, officers); err != nil {
		t.Fatal(err)
	}
	app, err := appliance.New(ctx, cfg, mod, db, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	e.app = app
	if opts.serve {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		sctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- httpapi.New(app).Serve(sctx, ln) }()
		t.Cleanup(func() {
			stop()
			if err := <-done; err != nil {
				t.Errorf("serving: %v", err)
			}
		})
		e.url = "https://" + ln.Addr().String()
		return e
	}
	ts := httptest.NewServer(httpapi.New(app).Handler())
	t.Cleanup(ts.Close)
	e.url = ts.URL
	return e
}

// keygen makes officer's key with keyrack officer keygen into
// dir/officer.key, records it as officer's, and returns the public key.
func (e *env) keygen(officer string, args ...string) string {
	e.t.Helper()
	f := filepath.Join(e.dir, officer+".key")
	if code, out, errs := e.keyrack("", append([]string{"officer", "keygen", "-o", f, "-comment", officer + "@test"}, args...)...); code != 0 {
		e.t.Fatalf("keygen %s: %d %s %s", officer, code, out, errs)
	}
	e.files[officer] = f
	pub, err := os.ReadFile(f + ".pub")
	if err != nil {
		e.t.Fatal(err)
	}
	return string(pub)
}

// keyrack runs the CLI as officer ("" for none) with their key file,
// signing without asking (-yes), and returns exit code and output.
func (e *env) keyrack(officer string, args ...string) (int, string, string) {
	var full []string
	if officer != "" {
		full = []string{"-key", e.files[officer], "-yes"}
	}
	return e.keyrackTTY(nil, append(full, args...)...)
}

// keyrackTTY runs the CLI with tty as its terminal (nil for none) and
// only the arguments given after -url.
func (e *env) keyrackTTY(tty terminal, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := runWith(append([]string{"-url", e.url}, args...), tty, &out, &errb)
	return code, out.String(), errb.String()
}

// scripted is a terminal that answers from a script and records what it
// was asked.
type scripted struct {
	answers []string
	asked   []string
}

func (s *scripted) next(prompt string) (string, error) {
	s.asked = append(s.asked, prompt)
	if len(s.answers) == 0 {
		return "", io.EOF
	}
	a := s.answers[0]
	s.answers = s.answers[1:]
	return a, nil
}

func (s *scripted) readLine(prompt string) (string, error) { return s.next(prompt) }

func (s *scripted) readSecret(prompt string) ([]byte, error) {
	a, err := s.next(prompt)
	return []byte(a), err
}

var approveHint = regexp.MustCompile(`keyrack approve ([0-9a-f]+)`)

// proposalID is the proposal a command's output names.
func proposalID(t testing.TB, out string) string {
	t.Helper()
	id := approveHint.FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("no approve hint in %q", out)
	}
	return id[1]
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
	code, out, errs = e.keyrack("", wrapArgs(fp[1])...)
	if code != 0 || !strings.Contains(out, "RSA-4096") {
		t.Fatalf("wrap: %d %s %s", code, out, errs)
	}
	keyID := regexp.MustCompile(`sign-key-sha3-384 (\S+)`).FindStringSubmatch(out)
	if want, _ := assertion.KeyID(&orig.PublicKey); keyID == nil || keyID[1] != want {
		t.Fatalf("wrap names key %v, not %s:\n%s", keyID, want, out)
	}
	// And the blob's SHA-256 as sha256sum prints it, which approvers find
	// in the content.
	if written, err := os.ReadFile(blob); err != nil {
		t.Fatal(err)
	} else if sum := sha256.Sum256(written); !strings.Contains(out, hex.EncodeToString(sum[:])+"  "+blob+"\n") {
		t.Fatalf("wrap does not print the blob's sha256:\n%s", out)
	}
	if code, _, errs := e.keyrack("", wrapArgs(fp[1])...); code != 1 || !strings.Contains(errs, "refusing to overwrite") {
		t.Fatalf("second wrap over the blob: %d %s", code, errs)
	}

	code, out, errs = e.keyrack("alice", "keys", "import", "brand-serial", "-blob", blob, "-key-id", keyID[1], "-role", "serial=foo-.*")
	if code != 0 || !strings.Contains(out, "state      pending (1 of 2 approvals: alice)") {
		t.Fatalf("import proposal: %d\n%s\n%s", code, out, errs)
	}
	// The proposer signed what the appliance recorded: the wrapped blob
	// by its SHA-256.
	blobBytes, _ := os.ReadFile(blob)
	sum := sha256.Sum256(blobBytes)
	if !strings.Contains(errs, `"blob-sha256": "`+hex.EncodeToString(sum[:])+`"`) || !strings.Contains(errs, "exactly this content") {
		t.Fatalf("the signed content shown does not name the blob:\n%s", errs)
	}
	id := proposalID(t, out)
	if code, _, errs := e.keyrack("alice", "approve", id); code != 1 || !strings.Contains(errs, "already approved") {
		t.Fatalf("self-approval: %d %s", code, errs)
	}
	code, out, errs = e.keyrack("bob", "approve", id)
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
		e.keyrack("bob", "approve", proposalID(t, out))
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
	if code, _, errs := e.keyrack("", "keys"); code != 1 || !strings.Contains(errs, "no officer key") {
		t.Errorf("no key: %d %s", code, errs)
	}
	if code, _, errs := e.keyrack("", "-key", e.files["alice"]+".pub", "keys"); code != 1 || !strings.Contains(errs, "is a public key") {
		t.Errorf("public key as -key: %d %s", code, errs)
	}
	// A key the appliance does not know does not log in.
	e.keygen("stranger")
	if code, _, errs := e.keyrack("stranger", "keys"); code != 1 || !strings.Contains(errs, "login failed") {
		t.Errorf("unknown key: %d %s", code, errs)
	}
	// keygen refuses to overwrite a key.
	if code, _, errs := e.keyrack("", "officer", "keygen", "-o", e.files["alice"]); code != 1 || !strings.Contains(errs, "refusing to overwrite") {
		t.Errorf("keygen over a key: %d %s", code, errs)
	}
	if code, _, errs := e.keyrack("", "officer", "keygen"); code != 2 || !strings.Contains(errs, "keygen -o FILE") {
		t.Errorf("keygen without -o: %d %s", code, errs)
	}
	if code, _, errs := e.keyrack("alice", "keys", "generate", "x"); code != 2 || !strings.Contains(errs, "-role") {
		t.Errorf("generate without roles: %d %s", code, errs)
	}
	if code, _, errs := e.keyrack("alice", "keys", "generate", "x", "-role", "account-key"); code != 1 || !strings.Contains(errs, "unknown assertion type") {
		t.Errorf("bad role: %d %s", code, errs)
	}
	// Anyone learns up or down; an officer, the token's details.
	code, out, _ := e.keyrack("", "status")
	if code != 0 || !strings.Contains(out, "appliance  ok (ok;") || strings.Contains(out, "cli-test") {
		t.Errorf("status without a key: %d %s", code, out)
	}
	code, out, _ = e.keyrack("alice", "status")
	if code != 0 || !strings.Contains(out, "token      up: cli-test") {
		t.Errorf("status as an officer: %d %s", code, out)
	}
	code, out, _ = e.keyrack("alice", "officers")
	if code != 0 || !strings.Contains(out, "quorum 2") {
		t.Errorf("officers: %d %s", code, out)
	}
}

func TestModelsClientsDevice(t *testing.T) {
	e := newEnv(t)
	keyFile := e.lineSetup()
	signingKey := filepath.Join(e.dir, "signing-key")
	code, out, errs := e.keyrack("", "device", "register", "-api-key-file", keyFile, "-signing-key-file", signingKey, "-brand", "brand-x", "-model", "line-7", "-bits", "2048")
	if code != 0 || !strings.Contains(out, "type: serial") || !strings.Contains(out, "serial: L7-1") {
		t.Fatalf("device register: %d\n%s\n%s", code, out, errs)
	}
	code, out, _ = e.keyrack("bob", "log", "-type", "serial", "-csv")
	if code != 0 || !strings.Contains(out, ",serial,") || !strings.Contains(out, "L7-1") {
		t.Fatalf("log: %d %s", code, out)
	}
	// A client scoped to line-7 cannot register a device of another model.
	code, _, errs = e.keyrack("", "device", "register", "-api-key-file", keyFile, "-signing-key-file", signingKey, "-brand", "brand-x", "-model", "line-8", "-bits", "2048")
	if code != 1 || !strings.Contains(errs, "client-model") {
		t.Fatalf("out-of-scope device: %d %s", code, errs)
	}
	// Moving an assigned serial to a new key is refused at the proposal,
	// with the reason; a serial that does not exist, too.
	newKey := strings.Repeat("A", 64)
	if code, _, errs := e.keyrack("alice", "serials", "rekey", "brand-x", "line-7", "L7-1", "-device-key", newKey, "-yes"); code != 1 || !strings.Contains(errs, "a device with a new key gets a new serial") {
		t.Fatalf("serials rekey of an assigned serial: %d %s", code, errs)
	}
	if code, _, errs := e.keyrack("alice", "serials", "rekey", "brand-x", "line-7", "L7-99", "-device-key", newKey, "-yes"); code != 1 || !strings.Contains(errs, "no serial L7-99") {
		t.Fatalf("serials rekey of an unknown serial: %d %s", code, errs)
	}
	if code, _, _ := e.keyrack("alice", "serials", "rekey", "brand-x", "line-7"); code != 2 {
		t.Fatalf("serials rekey without a serial: %d", code)
	}
	// Kinds and limits in the listing; limits changed by a ceremony; a
	// client mixing serial with another type refused, saying why.
	code, out, _ = e.keyrack("bob", "clients")
	if code != 0 || !regexp.MustCompile(`line-7-client\s+device-service\s.*\s-\n`).MatchString(out) ||
		!regexp.MustCompile(`line-7-signer\s+signing\s.*models=line-7 until<=365d ssh-keys serials-required\n`).MatchString(out) {
		t.Fatalf("clients:\n%s", out)
	}
	code, out, errs = e.keyrack("alice", "clients", "limits", "line-7-signer", "-max-validity-days", "30", "-password")
	if code != 0 || !strings.Contains(out, "valid for at most 30 days, password allowed, SSH keys allowed, serials required") {
		t.Fatalf("clients limits: %d %s %s", code, out, errs)
	}
	if code, out, errs := e.keyrack("bob", "approve", proposalID(t, out)); code != 0 || !strings.Contains(out, "executed") {
		t.Fatalf("approving the limits: %d %s %s", code, out, errs)
	}
	if _, out, _ = e.keyrack("bob", "clients"); !strings.Contains(out, "models=line-7 until<=30d password+ssh-keys serials-required") {
		t.Fatalf("clients after the limits changed:\n%s", out)
	}
	code, _, errs = e.keyrack("alice", "clients", "create", "mixed", "-brand", "brand-x", "-model", "line-7", "-type", "serial", "-type", "system-user")
	if code != 1 || !strings.Contains(errs, "client-kind") || !strings.Contains(errs, "gadget image") {
		t.Fatalf("a mixed client: %d %s", code, errs)
	}
}

// alterEvent edits audit event 4 in the store file behind keyrack's back.
func alterEvent(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open(store.SQLiteDriver, "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE audit SET actor = 'officer:mallory' WHERE seq = 4`); err != nil {
		t.Fatal(err)
	}
}

// noSecrets fails the test when a run's output holds a session token, a
// private key or the passphrase.
func noSecrets(t *testing.T, passphrase string, outputs ...string) {
	t.Helper()
	for _, o := range outputs {
		for _, secret := range []string{"krk_s_", "PRIVATE KEY", passphrase} {
			if secret != "" && strings.Contains(o, secret) {
				t.Fatalf("output holds a secret (%.6s...):\n%s", secret, o)
			}
		}
	}
}

// fingerprint is the fingerprint of the public key file path.
func fingerprint(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := officerkey.ParsePublicKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return officerkey.Fingerprint(pub)
}

// logins counts officer's logins in the audit log.
func (e *env) logins(officer string) int {
	e.t.Helper()
	code, out, errs := e.keyrack("alice", "audit", "-limit", "1000")
	if code != 0 {
		e.t.Fatalf("audit: %d %s", code, errs)
	}
	return strings.Count(out, "officer:"+officer+"\tofficer.login\t")
}

// TestOfficerKeysRoundTrip: officers are key files made by keyrack
// officer keygen. Bootstrap (newEnv), a new officer dave with his own
// passphrase-protected key, dave logging in and approving, dave replacing
// his key (signed with the old one, approved by the quorum: afterwards
// only the new key logs in), and dave's removal.
func TestOfficerKeysRoundTrip(t *testing.T) {
	e := newEnv(t)
	for path, mode := range map[string]os.FileMode{e.files["alice"]: 0o600, e.files["alice"] + ".pub": 0o644} {
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != mode {
			t.Fatalf("%s: %v %v, want mode %v", path, st.Mode(), err, mode)
		}
	}

	// dave makes his key, its passphrase asked twice on his terminal.
	const pass = "dave's pass phrase"
	daveKey := filepath.Join(e.dir, "dave.key")
	tty := &scripted{answers: []string{pass, pass}}
	code, out, errs := e.keyrackTTY(tty, "officer", "keygen", "-o", daveKey, "-passphrase")
	daveFP := fingerprint(t, daveKey+".pub")
	if code != 0 || len(tty.asked) != 2 || !strings.Contains(out, "fingerprint "+daveFP) {
		t.Fatalf("keygen -passphrase: %d %q asked %q\n%s", code, out, tty.asked, errs)
	}
	noSecrets(t, pass, out, errs)
	priv, _ := os.ReadFile(daveKey)
	if _, err := officerkey.LoadSigner(priv, nil); !errors.Is(err, officerkey.ErrPassphrase) {
		t.Fatalf("dave's key file is not encrypted: %v", err)
	}
	other := filepath.Join(e.dir, "other.key")
	if code, _, errs := e.keyrackTTY(&scripted{answers: []string{pass, "another"}}, "officer", "keygen", "-o", other, "-passphrase"); code != 1 || !strings.Contains(errs, "differ") {
		t.Fatalf("keygen with two passphrases: %d %s", code, errs)
	}
	if _, err := os.Stat(other); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("keygen wrote a key after a passphrase mismatch: %v", err)
	}

	// alice proposes dave with his public key; bob approves.
	code, out, errs = e.keyrack("alice", "officers", "add", "dave", "-pubkey", daveKey+".pub")
	if code != 0 || !strings.Contains(out, "key        "+daveFP) || !strings.Contains(out, "(1 of 2 approvals: alice)") ||
		!strings.Contains(errs, `"kind": "officer.add"`) {
		t.Fatalf("officers add: %d\n%s\n%s", code, out, errs)
	}
	if code, out, errs := e.keyrack("bob", "approve", proposalID(t, out)); code != 0 || !strings.Contains(out, "state      executed") {
		t.Fatalf("approving dave: %d\n%s\n%s", code, out, errs)
	}
	if code, out, _ := e.keyrack("bob", "officers"); code != 0 || !strings.Contains(out, "dave\tactive\t"+daveFP+"\n") {
		t.Fatalf("officers list:\n%s", out)
	}

	// dave logs in (his passphrase asked on his terminal) and approves
	// alice's proposal after confirming its content.
	_, out, _ = e.keyrack("alice", "clients", "create", "line-client", "-brand", "brand-x", "-model", "line-1", "-type", "serial")
	id := proposalID(t, out)
	if code, _, errs := e.keyrackTTY(&scripted{answers: []string{"wrong"}}, "-key", daveKey, "approve", id); code != 1 || !strings.Contains(errs, "wrong passphrase") {
		t.Fatalf("wrong passphrase: %d %s", code, errs)
	}
	before := e.logins("dave")
	tty = &scripted{answers: []string{pass, "y"}}
	code, out, errs = e.keyrackTTY(tty, "-key", daveKey, "approve", id)
	if code != 0 || !strings.Contains(out, "state      executed (2 of 2 approvals: alice, dave)") || !strings.Contains(out, "credential krk_c_") {
		t.Fatalf("dave approves: %d\n%s\n%s", code, out, errs)
	}
	if len(tty.asked) != 2 || tty.asked[1] != "sign this? [y/N] " || !strings.Contains(errs, `"id": "`+id+`"`) {
		t.Fatalf("dave was asked %q after seeing:\n%s", tty.asked, errs)
	}
	noSecrets(t, pass, out, errs)
	// One login for the run's two officer calls (the proposal, the approval).
	if n := e.logins("dave") - before; n != 1 {
		t.Fatalf("dave logged in %d times in one run", n)
	}

	// dave replaces his key: the proposal signed with the old key, alice's
	// approval the quorum's second.
	newKey := filepath.Join(e.dir, "dave-2024.key")
	e.keyrackTTY(nil, "officer", "keygen", "-o", newKey)
	newFP := fingerprint(t, newKey+".pub")
	code, out, errs = e.keyrackTTY(&scripted{answers: []string{pass}}, "-key", daveKey, "-yes", "officers", "rotate", "-pubkey", newKey+".pub")
	if code != 0 || !strings.Contains(out, "key        "+newFP) || !strings.Contains(out, "(1 of 2 approvals: dave)") {
		t.Fatalf("rotate: %d\n%s\n%s", code, out, errs)
	}
	if code, out, errs := e.keyrack("alice", "approve", proposalID(t, out)); code != 0 || !strings.Contains(out, "state      executed") {
		t.Fatalf("approving the rotation: %d\n%s\n%s", code, out, errs)
	}
	if code, _, errs := e.keyrackTTY(&scripted{answers: []string{pass}}, "-key", daveKey, "officers"); code != 1 || !strings.Contains(errs, "login failed") {
		t.Fatalf("dave's old key after the rotation: %d %s", code, errs)
	}
	if code, out, errs := e.keyrackTTY(nil, "-key", newKey, "officers"); code != 0 || !strings.Contains(out, "dave\tactive\t"+newFP+"\n") {
		t.Fatalf("dave's new key: %d\n%s\n%s", code, out, errs)
	}
	if _, out, _ := e.keyrack("alice", "audit", "-limit", "1000"); !strings.Contains(out, "officer:alice\tofficer.rotate\tdave\tok") {
		t.Fatalf("audit lacks the rotation:\n%s", out)
	}

	// dave is removed: his key logs in no more.
	_, out, _ = e.keyrack("alice", "officers", "remove", "dave")
	if code, out, errs := e.keyrack("bob", "approve", proposalID(t, out)); code != 0 || !strings.Contains(out, "state      executed") {
		t.Fatalf("removing dave: %d\n%s\n%s", code, out, errs)
	}
	if code, _, errs := e.keyrackTTY(nil, "-key", newKey, "officers"); code != 1 || !strings.Contains(errs, "login failed") {
		t.Fatalf("removed dave logs in: %d %s", code, errs)
	}
	if _, out, _ := e.keyrack("bob", "officers"); !strings.Contains(out, "dave\tremoved ") {
		t.Fatalf("officers list after the removal:\n%s", out)
	}
}

// TestSigningAsksFirst: a ceremony step is signed only after the officer
// saw its content and said yes; without a terminal, only -yes signs.
func TestSigningAsksFirst(t *testing.T) {
	e := newEnv(t)
	alice := e.files["alice"]
	pending := func() string {
		t.Helper()
		_, out, _ := e.keyrack("bob", "proposals")
		return out
	}
	// No terminal, no -yes: refused before anything is sent.
	code, _, errs := e.keyrackTTY(nil, "-key", alice, "clients", "create", "c1", "-brand", "brand-x", "-model", "line-1", "-type", "serial")
	if code != 1 || !strings.Contains(errs, "-yes") {
		t.Fatalf("no terminal: %d %s", code, errs)
	}
	if out := pending(); strings.Contains(out, "c1") {
		t.Fatalf("a proposal was sent without a way to confirm it:\n%s", out)
	}
	// "n": alice's own proposal is not signed, and is withdrawn.
	tty := &scripted{answers: []string{"n"}}
	code, out, errs := e.keyrackTTY(tty, "-key", alice, "clients", "create", "c1", "-brand", "brand-x", "-model", "line-1", "-type", "serial")
	if code != 1 || !strings.Contains(errs, "not signed: proposal") || !strings.Contains(errs, `"kind": "client.create"`) || out != "" {
		t.Fatalf("declined proposal: %d %q\n%s", code, out, errs)
	}
	if _, out, _ := e.keyrack("bob", "proposals", "-state", "cancelled"); !strings.Contains(out, `create device-service client "c1"`) {
		t.Fatalf("the declined proposal is not cancelled:\n%s", out)
	}
	// "y", and -yes after the command.
	tty = &scripted{answers: []string{"y"}}
	code, out, errs = e.keyrackTTY(tty, "-key", alice, "clients", "create", "c1", "-brand", "brand-x", "-model", "line-1", "-type", "serial")
	if code != 0 || !strings.Contains(out, "(1 of 2 approvals: alice)") || len(tty.asked) != 1 {
		t.Fatalf("confirmed proposal: %d %q\n%s", code, out, errs)
	}
	id := proposalID(t, out)
	if code, _, errs := e.keyrackTTY(nil, "-key", e.files["bob"], "approve", id); code != 1 || !strings.Contains(errs, "-yes") {
		t.Fatalf("approve without a terminal: %d %s", code, errs)
	}
	if code, _, errs := e.keyrackTTY(&scripted{answers: []string{""}}, "-key", e.files["bob"], "approve", id); code != 1 || !strings.Contains(errs, "not signed") {
		t.Fatalf("approve, answered with return: %d %s", code, errs)
	}
	if out := pending(); !strings.Contains(out, id+"  pending  1/2") {
		t.Fatalf("the declined approval changed the proposal:\n%s", out)
	}
	if code, out, errs := e.keyrackTTY(nil, "-key", e.files["bob"], "approve", id, "-yes"); code != 0 || !strings.Contains(out, "state      executed") {
		t.Fatalf("approve -yes: %d\n%s\n%s", code, out, errs)
	}
}

// TestOfficerLoginWithAgent: officers whose keys are in ssh-agent log in
// and approve with -agent, the key named by its public key file (flag or
// environment); the private key files are gone by then. (FIDO2 sk- keys
// take the same path through the agent, but cannot be tested here: there
// is no authenticator to touch.)
func TestOfficerLoginWithAgent(t *testing.T) {
	for _, tool := range []string{"ssh-agent", "ssh-add"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (openssh-client)", tool)
		}
	}
	e := newEnv(t)
	if code, _, errs := e.keyrackTTY(nil, "-agent", "-yes", "officers"); code != 1 || !strings.Contains(errs, "SSH_AUTH_SOCK is not set") {
		t.Fatalf("-agent without an agent: %d %s", code, errs)
	}
	// A short path: a unix socket's path has a small size limit.
	dir, err := os.MkdirTemp("", "ka")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s")
	var agentOut bytes.Buffer
	agent := exec.Command("ssh-agent", "-D", "-a", sock)
	agent.Stdout, agent.Stderr = &agentOut, &agentOut
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	// Ready when it takes a connection: its socket file exists a moment
	// before it listens.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ssh-agent did not take connections on its socket: %s", agentOut.String())
		}
	}
	for _, officer := range []string{"alice", "bob"} {
		add := exec.Command("ssh-add", e.files[officer])
		add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
		if out, err := add.CombinedOutput(); err != nil {
			t.Fatalf("ssh-add %s: %v %s", officer, err, out)
		}
		// From here on only the agent can sign for them.
		if err := os.Remove(e.files[officer]); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("SSH_AUTH_SOCK", sock)

	if code, _, errs := e.keyrackTTY(nil, "-agent", "-yes", "officers"); code != 1 || !strings.Contains(errs, "2 suitable keys") {
		t.Fatalf("-agent with two keys and none named: %d %s", code, errs)
	}
	e.keygen("stranger")
	if code, _, errs := e.keyrackTTY(nil, "-agent", "-key", e.files["stranger"]+".pub", "officers"); code != 1 || !strings.Contains(errs, "holds no key "+fingerprint(t, e.files["stranger"]+".pub")) {
		t.Fatalf("-agent naming a key it lacks: %d %s", code, errs)
	}
	// alice names her key with -key FILE.pub.
	code, out, errs := e.keyrackTTY(nil, "-agent", "-key", e.files["alice"]+".pub", "-yes", "clients", "create", "c1", "-brand", "brand-x", "-model", "line-1", "-type", "serial")
	if code != 0 || !strings.Contains(out, "(1 of 2 approvals: alice)") {
		t.Fatalf("alice proposes through the agent: %d\n%s\n%s", code, out, errs)
	}
	id := proposalID(t, out)
	// bob by the environment, the key named by the private key's path
	// (whose FILE.pub is read).
	t.Setenv("KEYRACK_AGENT", "1")
	t.Setenv("KEYRACK_OFFICER_PUBKEY", e.files["bob"])
	code, out, errs = e.keyrackTTY(nil, "approve", "-yes", id)
	if code != 0 || !strings.Contains(out, "state      executed (2 of 2 approvals: alice, bob)") {
		t.Fatalf("bob approves through the agent: %d\n%s\n%s", code, out, errs)
	}
	noSecrets(t, "", out, errs)
}

// lineSetup makes a serial and model key, binds model line-7 of brand-x
// to it and creates its API client, whose key it writes to a file; a
// device of line-7 then registers with that file.
func (e *env) lineSetup() (apiKeyFile string) {
	t := e.t
	t.Helper()
	approve := func(out string) string {
		t.Helper()
		code, out, errs := e.keyrack("bob", "approve", proposalID(t, out))
		if code != 0 {
			t.Fatalf("approve: %d %s %s", code, out, errs)
		}
		return out
	}
	code, out, errs := e.keyrack("alice", "keys", "generate", "line-key", "-role", "serial=line-.*", "-role", "model=line-.*")
	if code != 0 {
		t.Fatalf("generate: %d %s %s", code, out, errs)
	}
	approve(out)
	_, out, _ = e.keyrack("alice", "models", "set", "brand-x", "line-7", "-key", "serial=line-key", "-key", "model=line-key", "-serial-source", "assign", "-serial-prefix", "L7-")
	approve(out)
	code, out, errs = e.keyrack("alice", "models", "template", "brand-x", "line-7", "-file", e.statementFile("line-7.json", line7Statement))
	if code != 0 {
		t.Fatalf("models template: %d %s %s", code, out, errs)
	}
	approve(out)
	// The line's device-service client (its key goes into the gadget) and
	// a signing client for the model the test device carries.
	for _, c := range []struct{ name, file string }{{"line-7-client", "api-key"}, {"line-7-signer", "signing-key"}} {
		args := []string{"clients", "create", c.name, "-kind", "device-service", "-brand", "brand-x", "-model", "line-7"}
		if c.file == "signing-key" {
			args = []string{"clients", "create", c.name, "-kind", "signing", "-brand", "brand-x", "-model", "line-7", "-type", "model"}
		}
		_, out, _ = e.keyrack("alice", args...)
		out = approve(out)
		cred := regexp.MustCompile(`credential (krk_c_\S+)`).FindStringSubmatch(out)
		if cred == nil {
			t.Fatalf("no client credential in %q", out)
		}
		if err := os.WriteFile(filepath.Join(e.dir, c.file), []byte(cred[1]), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(e.dir, "api-key")
}

// register plays a line-7 device registering with the API key in file,
// its model signed for the signing client of lineSetup.
func (e *env) register(file string) (int, string, string) {
	return e.keyrack("", "device", "register", "-api-key-file", file, "-signing-key-file", filepath.Join(e.dir, "signing-key"),
		"-brand", "brand-x", "-model", "line-7", "-bits", "2048")
}

// apiGet asks the appliance for path as officer, logged in by the test
// itself with the officer's key file (not through the CLI), and returns
// the answer's body.
func (e *env) apiGet(officer, path string) []byte {
	t := e.t
	t.Helper()
	req, _ := http.NewRequest("GET", e.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+e.apiLogin(officer))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, raw)
	}
	return raw
}

// apiLogin logs officer in over the API with their key file, as keyrack
// does, and returns the session token.
func (e *env) apiLogin(officer string) string {
	t := e.t
	t.Helper()
	priv, err := os.ReadFile(e.files[officer])
	if err != nil {
		t.Fatal(err)
	}
	s, err := officerkey.LoadSigner(priv, nil)
	if err != nil {
		t.Fatal(err)
	}
	post := func(path string, in, out any) {
		t.Helper()
		b, _ := json.Marshal(in)
		resp, err := http.Post(e.url+path, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, out) != nil {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, raw)
		}
	}
	var ch wire.LoginChallenge
	post("/v1/login/challenge", wire.LoginRequest{PublicKey: officerkey.Authorized(s.PublicKey())}, &ch)
	sig, err := officerkey.Sign(s, officerkey.DomainLogin, []byte(ch.Content))
	if err != nil {
		t.Fatal(err)
	}
	var sess wire.Session
	post("/v1/login", wire.LoginAnswer{ID: ch.ID, Signature: sig}, &sess)
	return sess.Token
}

// TestListingsJSON: -json prints the appliance's answer, indented: the
// same JSON as the API gives for keys list and show, officers, proposals
// list and show, clients and models; for the signing log and the audit
// log, which are exported whole, one line per row or event, each the
// JSON object the API gives for it; the tables without -json are as
// before.
func TestListingsJSON(t *testing.T) {
	e := newEnv(t)
	apiKey := e.lineSetup()
	if code, out, errs := e.register(apiKey); code != 0 {
		t.Fatalf("device register: %d\n%s\n%s", code, out, errs)
	}
	_, out, _ := e.keyrack("alice", "keys", "generate", "pending-key", "-role", "serial")
	pending := proposalID(t, out)
	for _, tc := range []struct {
		cli []string
		api string
	}{
		{[]string{"keys", "-json"}, "/v1/keys"},
		{[]string{"keys", "list", "-json"}, "/v1/keys"},
		{[]string{"keys", "show", "line-key", "-json"}, "/v1/keys/line-key"},
		{[]string{"officers", "-json"}, "/v1/officers"},
		{[]string{"officers", "list", "-json"}, "/v1/officers"},
		{[]string{"proposals", "-json"}, "/v1/proposals?state=pending"},
		{[]string{"proposals", "-state", "all", "-json"}, "/v1/proposals"},
		{[]string{"proposals", "show", pending, "-json"}, "/v1/proposals/" + pending},
		{[]string{"clients", "-json"}, "/v1/clients"},
		{[]string{"models", "list", "-json"}, "/v1/models"},
	} {
		code, out, errs := e.keyrack("bob", tc.cli...)
		if code != 0 {
			t.Fatalf("%v: %d %s", tc.cli, code, errs)
		}
		var got, want any
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v: not JSON: %v\n%s", tc.cli, err, out)
		}
		if err := json.Unmarshal(e.apiGet("alice", tc.api), &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%v prints\n%s\nthe API answers %s:\n%v", tc.cli, out, tc.api, want)
		}
		if !strings.HasPrefix(out, "{\n  \"") {
			t.Errorf("%v: not indented:\n%s", tc.cli, out)
		}
	}
	for _, tc := range []struct {
		cli      []string
		api, key string
	}{
		{[]string{"log", "-json"}, "/v1/signing-log", "entries"},
		{[]string{"log", "-type", "serial", "-json"}, "/v1/signing-log?type=serial", "entries"},
		// A range of the chain that the runs' own logins do not change.
		{[]string{"audit", "-after", "2", "-limit", "5", "-json"}, "/v1/audit?after=2&limit=5", "events"},
	} {
		code, out, errs := e.keyrack("bob", tc.cli...)
		if code != 0 {
			t.Fatalf("%v: %d %s", tc.cli, code, errs)
		}
		var page map[string]json.RawMessage
		var want []any
		if err := json.Unmarshal(e.apiGet("alice", tc.api), &page); err != nil || json.Unmarshal(page[tc.key], &want) != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(want) == 0 || len(lines) != len(want) {
			t.Fatalf("%v prints %d lines, the API has %d %s:\n%s", tc.cli, len(lines), len(want), tc.key, out)
		}
		for i, l := range lines {
			var got any
			if err := json.Unmarshal([]byte(l), &got); err != nil || !reflect.DeepEqual(got, want[i]) {
				t.Errorf("%v line %d: %s (%v), the API: %v", tc.cli, i, l, err, want[i])
			}
		}
	}
	// The signing log has the device's serial, and the tables are tables.
	if _, out, _ := e.keyrack("bob", "log", "-json"); !strings.Contains(out, `"serial":"L7-1"`) {
		t.Fatalf("log -json lacks the serial:\n%s", out)
	}
	for cmd, head := range map[string]string{"keys": "NAME  ", "proposals": "ID  ", "clients": "NAME  ", "models": "BRAND  ", "log": "ID  ", "officers": "quorum 2\n"} {
		if code, out, _ := e.keyrack("bob", cmd); code != 0 || !strings.HasPrefix(out, head) {
			t.Errorf("%s without -json: %d\n%s", cmd, code, out)
		}
	}
	if code, _, errs := e.keyrack("bob", "log", "-json", "-csv"); code != 2 || !strings.Contains(errs, "-csv | -json") {
		t.Errorf("log -json -csv: %d %s", code, errs)
	}
	if code, _, _ := e.keyrack("bob", "keys", "list", "extra"); code != 2 {
		t.Errorf("keys list with an argument: %d", code)
	}
}

// TestFreezeAndRevokeAtOnce: one officer freezes a key (it stops
// signing, shown disabled, no proposal made) and revokes an API client
// (refused from its next request on, no proposal made); the quorum
// brings the key back.
func TestFreezeAndRevokeAtOnce(t *testing.T) {
	e := newEnv(t)
	apiKey := e.lineSetup()
	if code, out, errs := e.register(apiKey); code != 0 {
		t.Fatalf("device register: %d\n%s\n%s", code, out, errs)
	}
	code, out, errs := e.keyrack("alice", "keys", "freeze", "line-key")
	if code != 0 || out != "key line-key frozen: state disabled\nnext       it signs nothing until the quorum approves: keyrack keys enable line-key\n" {
		t.Fatalf("freeze: %d %q %s", code, out, errs)
	}
	if _, out, _ := e.keyrack("bob", "keys"); !regexp.MustCompile(`line-key\s+disabled\s`).MatchString(out) {
		t.Fatalf("keys after the freeze:\n%s", out)
	}
	if code, out, errs := e.register(apiKey); code != 1 || strings.Contains(out, "type: serial") {
		t.Fatalf("a serial signed by a frozen key: %d\n%s\n%s", code, out, errs)
	}
	if code, _, errs := e.keyrack("bob", "keys", "freeze", "line-key"); code != 1 || !strings.Contains(errs, "not active") {
		t.Fatalf("freezing a frozen key: %d %s", code, errs)
	}
	// Nothing waits for a second officer.
	if _, out, _ := e.keyrack("bob", "proposals"); strings.Count(out, "\n") != 1 {
		t.Fatalf("pending proposals after the freeze:\n%s", out)
	}
	_, out, _ = e.keyrack("alice", "keys", "enable", "line-key")
	if code, out, errs := e.keyrack("bob", "approve", proposalID(t, out)); code != 0 || !strings.Contains(out, "state      executed") {
		t.Fatalf("enable: %d\n%s\n%s", code, out, errs)
	}
	if code, out, errs := e.register(apiKey); code != 0 || !strings.Contains(out, "serial: L7-2") {
		t.Fatalf("after the enable: %d\n%s\n%s", code, out, errs)
	}

	code, out, errs = e.keyrack("alice", "clients", "revoke", "line-7-client")
	if code != 0 || !regexp.MustCompile(`^API client line-7-client revoked at \S+: its key is refused from now on\n$`).MatchString(out) {
		t.Fatalf("revoke: %d %q %s", code, out, errs)
	}
	if _, out, _ := e.keyrack("bob", "clients"); !regexp.MustCompile(`line-7-client\s.*\srevoked\s+-\n`).MatchString(out) {
		t.Fatalf("clients after the revocation:\n%s", out)
	}
	if code, _, errs := e.register(apiKey); code != 1 || !strings.Contains(errs, "401") {
		t.Fatalf("a revoked client registers a device: %d %s", code, errs)
	}
	if code, _, errs := e.keyrack("bob", "clients", "revoke", "line-7-client"); code != 1 || !strings.Contains(errs, "already revoked") {
		t.Fatalf("revoking twice: %d %s", code, errs)
	}
	if _, out, _ := e.keyrack("bob", "proposals"); strings.Count(out, "\n") != 1 {
		t.Fatalf("pending proposals after the revocation:\n%s", out)
	}
	if _, out, _ := e.keyrack("bob", "audit", "-limit", "1000"); !strings.Contains(out, "officer:alice\tkey.freeze\tline-key\tok") ||
		!strings.Contains(out, "officer:alice\tclient.revoke\tline-7-client\tok") {
		t.Fatalf("audit lacks the freeze or the revocation:\n%s", out)
	}
}

// TestQuorum: keyrack quorum prints the quorum on record; quorum set
// proposes a quorum.set the current quorum approves, and refuses one the
// officers cannot meet.
func TestQuorum(t *testing.T) {
	e := newEnv(t)
	if code, out, errs := e.keyrack("bob", "quorum"); code != 0 || out != "quorum 2\n" {
		t.Fatalf("quorum: %d %q %s", code, out, errs)
	}
	if code, _, errs := e.keyrack("alice", "quorum", "set", "3"); code != 1 || !strings.Contains(errs, "could never be met") {
		t.Fatalf("a quorum of 3 with 2 officers: %d %s", code, errs)
	}
	if code, _, _ := e.keyrack("alice", "quorum", "set", "three"); code != 2 {
		t.Fatalf("quorum set three: %d", code)
	}
	_, out, _ := e.keyrack("alice", "officers", "add", "carol", "-pubkey", e.keygenOnly("carol"))
	e.keyrack("bob", "approve", proposalID(t, out))
	code, out, errs := e.keyrack("alice", "quorum", "set", "3")
	if code != 0 || !strings.Contains(out, "set the quorum to 3 officers") || !strings.Contains(out, "(1 of 2 approvals: alice)") ||
		!strings.Contains(errs, `"kind": "quorum.set"`) {
		t.Fatalf("quorum set 3: %d\n%s\n%s", code, out, errs)
	}
	if code, out, errs := e.keyrack("bob", "approve", proposalID(t, out)); code != 0 || !strings.Contains(out, "state      executed") {
		t.Fatalf("approving the quorum: %d\n%s\n%s", code, out, errs)
	}
	if code, out, _ := e.keyrack("carol", "quorum"); code != 0 || out != "quorum 3\n" {
		t.Fatalf("quorum after the change: %d %q", code, out)
	}
}

// keygenOnly makes officer's key file without recording it anywhere, and
// returns the public key file's path.
func (e *env) keygenOnly(officer string) string {
	e.keygen(officer)
	return e.files[officer] + ".pub"
}

// accountKeyFor plays the Brand Store: an account-key for pub, signed by
// a stand-in store key (the appliance does not check who signed it;
// devices do). The approach of appliance/httpapi's storeAccountKey.
func accountKeyFor(t *testing.T, pub asserts.PublicKey, account string, constraints []any) []byte {
	t.Helper()
	root, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rk := asserts.RSAPrivateKey(root)
	db, err := asserts.OpenDatabase(&asserts.DatabaseConfig{Backstore: asserts.NewMemoryBackstore(), KeypairManager: asserts.NewMemoryKeypairManager()})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.ImportKey(rk); err != nil {
		t.Fatal(err)
	}
	body, err := asserts.EncodePublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	h := map[string]any{"authority-id": "canonical", "account-id": account, "name": "k", "public-key-sha3-384": pub.ID(),
		"since": time.Now().UTC().Format(time.RFC3339)}
	if constraints != nil {
		h["format"] = "1"
		h["constraints"] = constraints
	}
	a, err := db.Sign(asserts.AccountKeyType, h, body, rk.PublicKey().ID())
	if err != nil {
		t.Fatal(err)
	}
	return asserts.Encode(a)
}

// TestExportAndAccountKey: keys export gives the account-key-request the
// key signed, its key id, public key and constraints; the account-key
// the Brand Store issues for them goes back with keys account-key, and
// one for another key or with wider constraints is refused.
func TestExportAndAccountKey(t *testing.T) {
	e := newEnv(t)
	_, out, _ := e.keyrack("alice", "keys", "generate", "reg-key", "-role", "serial=line-.*,bench")
	e.keyrack("bob", "approve", proposalID(t, out))
	var k struct {
		KeyID string `json:"sign-key-sha3-384"`
	}
	_, out, _ = e.keyrack("bob", "keys", "show", "reg-key")
	if err := json.Unmarshal([]byte(out), &k); err != nil || k.KeyID == "" {
		t.Fatalf("keys show: %v\n%s", err, out)
	}

	if code, _, errs := e.keyrack("alice", "keys", "export", "reg-key"); code != 2 || !strings.Contains(errs, "-account-id") {
		t.Fatalf("export without -account-id: %d %s", code, errs)
	}
	akrFile := filepath.Join(e.dir, "reg-key.akr")
	code, out, errs := e.keyrack("alice", "keys", "export", "reg-key", "-account-id", "brand-x", "-o", akrFile)
	if code != 0 || !strings.HasPrefix(out, "wrote "+akrFile+" (the account-key-request)\nsign-key-sha3-384 "+k.KeyID+"\npublic-key ") ||
		!strings.Contains(out, `constraints [{"headers":{"model":["bench","line-.*"],"type":"serial"}}]`+"\n") {
		t.Fatalf("export -o: %d\n%s\n%s", code, out, errs)
	}
	data, err := os.ReadFile(akrFile)
	if err != nil {
		t.Fatal(err)
	}
	akr, err := asserts.Decode(data)
	if err != nil || akr.Type() != asserts.AccountKeyRequestType || akr.HeaderString("account-id") != "brand-x" ||
		akr.HeaderString("public-key-sha3-384") != k.KeyID {
		t.Fatalf("the account-key-request written: %v\n%s", err, data)
	}
	// What `snap export-key NAME` prints, read as snapd reads it.
	printed := regexp.MustCompile(`(?s)public-key \(as snap export-key prints it\):\n(.*?)\nconstraints `).FindStringSubmatch(out)
	if printed == nil {
		t.Fatalf("no public key printed:\n%s", out)
	}
	pub, err := asserts.DecodePublicKey([]byte(printed[1]))
	if err != nil || pub.ID() != k.KeyID {
		t.Fatalf("public-key %v: %v", pub, err)
	}
	if err := asserts.SignatureCheck(akr, pub); err != nil {
		t.Fatalf("the account-key-request is not signed by the key: %v", err)
	}
	// Without -o, on standard output.
	if code, out, _ := e.keyrack("alice", "keys", "export", "reg-key", "-account-id", "brand-x"); code != 0 || !strings.HasPrefix(out, "type: account-key-request\n") {
		t.Fatalf("export: %d\n%s", code, out)
	}
	if code, _, errs := e.keyrack("alice", "keys", "export", "reg-key", "-account-id", "brand-x", "-o", akrFile); code != 1 || !strings.Contains(errs, "refusing to overwrite") {
		t.Fatalf("export over a file: %d %s", code, errs)
	}

	put := func(name string, data []byte) (int, string, string) {
		t.Helper()
		f := filepath.Join(e.dir, name+".account-key")
		if err := os.WriteFile(f, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return e.keyrack("alice", "keys", "account-key", "reg-key", "-file", f)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	if code, _, errs := put("other", accountKeyFor(t, asserts.RSAPublicKey(&other.PublicKey), "brand-x", nil)); code != 1 || !strings.Contains(errs, "wrong-key") {
		t.Fatalf("an account-key for another key: %d %s", code, errs)
	}
	wide := []any{map[string]any{"headers": map[string]any{"type": "serial", "model": ".*"}}}
	if code, _, errs := put("wide", accountKeyFor(t, pub, "brand-x", wide)); code != 1 || !strings.Contains(errs, "constraints-too-wide") {
		t.Fatalf("an account-key wider than the roles: %d %s", code, errs)
	}
	if _, out, _ := e.keyrack("bob", "keys", "show", "reg-key"); !strings.Contains(out, `"account-key-present": false`) {
		t.Fatalf("a refused account-key was recorded:\n%s", out)
	}
	narrow := []any{map[string]any{"headers": map[string]any{"type": "serial", "model": "bench"}}}
	code, out, errs = put("narrow", accountKeyFor(t, pub, "brand-x", narrow))
	if code != 0 || out != "key reg-key: account-key of account brand-x stored\n" {
		t.Fatalf("account-key: %d %q %s", code, out, errs)
	}
	if _, out, _ := e.keyrack("bob", "keys", "show", "reg-key"); !strings.Contains(out, `"account-key-present": true`) {
		t.Fatalf("the account-key is not recorded:\n%s", out)
	}
	if code, _, errs := e.keyrack("alice", "keys", "account-key", "reg-key"); code != 2 || !strings.Contains(errs, "-file FILE") {
		t.Fatalf("account-key without -file: %d %s", code, errs)
	}
}

// approvalsVerified is the count audit verify reports.
var approvalsVerified = regexp.MustCompile(`^audit chain OK: (\d+) events, (\d+) approvals verified\n`)

// TestAuditVerifyApprovals: audit verify checks every approval the chain
// records, over the API and from the store file; from the file it also
// checks the approvals on record, and names the proposal whose approval
// row was edited (another signature, another officer). An approval in the
// chain whose signature does not verify, the chain's hashes made again
// around it, is named by its event.
func TestAuditVerifyApprovals(t *testing.T) {
	e := newEnv(t)
	var ids []string
	for _, name := range []string{"a-key", "b-key"} {
		_, out, _ := e.keyrack("alice", "keys", "generate", name, "-role", "serial")
		ids = append(ids, proposalID(t, out))
		e.keyrack("bob", "approve", ids[len(ids)-1])
	}
	_, out, _ := e.keyrack("bob", "clients", "create", "c1", "-brand", "brand-x", "-model", "line-1", "-type", "serial")
	pending := proposalID(t, out)
	dbPath := filepath.Join(e.dir, "keyrack.db")
	code, out, errs := e.keyrack("bob", "audit", "verify")
	if m := approvalsVerified.FindStringSubmatch(out); code != 0 || m == nil || m[2] != "5" {
		t.Fatalf("audit verify over the API: %d %q %s", code, out, errs)
	}
	code, out, errs = e.keyrack("", "audit", "verify", "-db", dbPath)
	if m := approvalsVerified.FindStringSubmatch(out); code != 0 || m == nil || m[2] != "5" ||
		!strings.HasSuffix(out, "\nproposals on record: 3 checked against the chain\n") {
		t.Fatalf("audit verify -db: %d %q %s", code, out, errs)
	}

	db, err := sql.Open(store.SQLiteDriver, "file:"+dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sqlExec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Exec(q, args...); err != nil {
			t.Fatal(err)
		}
	}
	// bob's pending approval row given alice's (genuine) signature over
	// another proposal.
	var alices, bobs []byte
	db.QueryRow(`SELECT signature FROM approvals WHERE proposal_id = ? AND officer = 'alice'`, ids[0]).Scan(&alices)
	db.QueryRow(`SELECT signature FROM approvals WHERE proposal_id = ? AND officer = 'bob'`, pending).Scan(&bobs)
	sqlExec(`UPDATE approvals SET signature = ? WHERE proposal_id = ? AND officer = 'bob'`, alices, pending)
	code, out, errs = e.keyrack("", "audit", "verify", "-db", dbPath)
	if code != 1 || out != "BROKEN: proposal "+pending+": the approval by bob on record is not one the audit chain recorded\n" ||
		!strings.Contains(errs, "proposal "+pending) {
		t.Fatalf("an edited signature: %d %q %s", code, out, errs)
	}
	sqlExec(`UPDATE approvals SET signature = ? WHERE proposal_id = ? AND officer = 'bob'`, bobs, pending)
	if code, out, errs := e.keyrack("", "audit", "verify", "-db", dbPath); code != 0 {
		t.Fatalf("the row put back: %d %q %s", code, out, errs)
	}
	// bob's approval of b-key re-attributed to a stranger.
	sqlExec(`UPDATE approvals SET officer = 'mallory' WHERE proposal_id = ? AND officer = 'bob'`, ids[1])
	code, out, _ = e.keyrack("", "audit", "verify", "-db", dbPath)
	if code != 1 || !strings.HasPrefix(out, "BROKEN: proposal "+ids[1]+": the approval by mallory") {
		t.Fatalf("an approval moved to another officer: %d %q", code, out)
	}
	sqlExec(`UPDATE approvals SET officer = 'bob' WHERE proposal_id = ? AND officer = 'mallory'`, ids[1])
	// Over the API the store's rows are not read: the chain is intact.
	if code, out, errs := e.keyrack("bob", "audit", "verify"); code != 0 {
		t.Fatalf("audit verify over the API after the rows were put back: %d %q %s", code, out, errs)
	}

	// In the chain, bob's approval of a-key carries alice's signature,
	// and every hash from there on is made again: the hash chain holds,
	// the approval does not verify.
	var seq int64
	var details string
	if err := db.QueryRow(`SELECT seq, details FROM audit WHERE action = 'proposal.approve' AND actor = 'officer:bob' AND subject = ?`,
		"key.generate "+ids[0]).Scan(&seq, &details); err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	json.Unmarshal([]byte(details), &d)
	d["signature"] = base64.StdEncoding.EncodeToString(alices)
	forged, _ := json.Marshal(d)
	rehashFrom(t, db, seq, string(forged))
	for _, run := range [][]string{{"", "audit", "verify", "-db", dbPath}, {"bob", "audit", "verify"}} {
		code, out, errs := e.keyrack(run[0], run[1:]...)
		want := fmt.Sprintf("BROKEN at event %d: approval of %s by bob does not verify with %s, the key the chain records for bob: ",
			seq, ids[0], fingerprint(t, e.files["bob"]+".pub"))
		if code != 1 || !strings.HasPrefix(out, want) || !strings.HasSuffix(out, fmt.Sprintf(" (%d events before it verify)\n", seq-1)) {
			t.Fatalf("%v on a forged approval: %d %q %s", run[1:], code, out, errs)
		}
	}
}

// rehashFrom gives audit event seq the details given and makes the hash
// chain again from there to its end, as someone rewriting the chain
// would (the hash as appliance/store makes it: SHA-256 over the previous
// hash and the event's fields as JSON).
func rehashFrom(t *testing.T, db *sql.DB, seq int64, details string) {
	t.Helper()
	type row struct {
		seq, us                                 int64
		actor, action, subject, result, details string
	}
	rows, err := db.Query(`SELECT seq, time_us, actor, action, subject, result, details FROM audit WHERE seq >= ? ORDER BY seq`, seq)
	if err != nil {
		t.Fatal(err)
	}
	var evs []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.seq, &r.us, &r.actor, &r.action, &r.subject, &r.result, &r.details); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, r)
	}
	rows.Close()
	var prev []byte
	if err := db.QueryRow(`SELECT prev_hash FROM audit WHERE seq = ?`, seq).Scan(&prev); err != nil {
		t.Fatal(err)
	}
	evs[0].details = details
	for _, r := range evs {
		body, _ := json.Marshal(struct {
			Seq     int64  `json:"seq"`
			TimeUS  int64  `json:"time_us"`
			Actor   string `json:"actor"`
			Action  string `json:"action"`
			Subject string `json:"subject"`
			Result  string `json:"result"`
			Details string `json:"details"`
		}{r.seq, r.us, r.actor, r.action, r.subject, r.result, r.details})
		h := sha256.New()
		h.Write(prev)
		h.Write(body)
		hash := h.Sum(nil)
		if _, err := db.Exec(`UPDATE audit SET details = ?, prev_hash = ?, hash = ? WHERE seq = ?`, r.details, prev, hash, r.seq); err != nil {
			t.Fatal(err)
		}
		prev = hash
	}
}

// testCA issues the TLS test's certificates into files.
type testCA struct{ *testpki.CA }

func newTestCA(t *testing.T) *testCA { return &testCA{testpki.NewCA(t, "keyrack CLI test CA")} }

// issue writes a certificate for cn (and 127.0.0.1) and its key into dir
// as NAME.crt and NAME.key, and returns their paths and the SHA-256 of
// the certificate's DER.
func (ca *testCA) issue(t *testing.T, dir, name, cn string, usage x509.ExtKeyUsage) (certFile, keyFile, sum string) {
	t.Helper()
	certPEM, keyPEM := ca.Issue(t, cn, usage)
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	h := sha256.Sum256(block.Bytes)
	return certFile, keyFile, hex.EncodeToString(h[:])
}

// TestTLSClientCertificates: the CLI against an appliance that is not a
// dev appliance and requires officers' client certificates, served over
// TLS by httpapi itself. alice and bob have theirs bound at bootstrap:
// with -ca, -cert and -cert-key (or their environment variables) they
// list keys, propose and approve, and add carol with her certificate,
// who then logs in with it. Without -cert the appliance's 403 message
// comes back; with another officer's certificate the login is refused;
// without -ca the appliance's certificate is not trusted.
func TestTLSClientCertificates(t *testing.T) {
	pki := t.TempDir()
	ca := newTestCA(t)
	caFile := filepath.Join(pki, "ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o644)
	srvCert, srvKey, _ := ca.issue(t, pki, "appliance", "appliance", x509.ExtKeyUsageServerAuth)
	type certs struct{ cert, key, sum string }
	officer := map[string]certs{}
	for _, name := range []string{"alice", "bob", "carol"} {
		c, k, sum := ca.issue(t, pki, name, "officer "+name, x509.ExtKeyUsageClientAuth)
		officer[name] = certs{c, k, sum}
	}
	e := newEnvWith(t, envOptions{
		config: fmt.Sprintf(`"tls": {"cert_file": %q, "key_file": %q, "client_ca_file": %q, "officer_client_cert": true}`, srvCert, srvKey, caFile),
		certs:  map[string]string{"alice": officer["alice"].sum, "bob": officer["bob"].sum},
		serve:  true,
	})
	as := func(name, certOf string, args ...string) (int, string, string) {
		t.Helper()
		full := []string{"-ca", caFile, "-key", e.files[name], "-yes"}
		if certOf != "" {
			full = append(full, "-cert", officer[certOf].cert, "-cert-key", officer[certOf].key)
		}
		return e.keyrackTTY(nil, append(full, args...)...)
	}
	if code, out, errs := as("alice", "alice", "keys"); code != 0 || !strings.HasPrefix(out, "NAME  ") {
		t.Fatalf("keys over TLS with alice's certificate: %d\n%s\n%s", code, out, errs)
	}
	code, out, errs := as("alice", "alice", "keys", "generate", "tls-key", "-role", "serial")
	if code != 0 || !strings.Contains(out, "(1 of 2 approvals: alice)") {
		t.Fatalf("proposing over TLS: %d\n%s\n%s", code, out, errs)
	}
	// bob by the environment.
	t.Setenv("KEYRACK_CA", caFile)
	t.Setenv("KEYRACK_CERT", officer["bob"].cert)
	t.Setenv("KEYRACK_CERT_KEY", officer["bob"].key)
	code, out, errs = e.keyrackTTY(nil, "-key", e.files["bob"], "approve", "-yes", proposalID(t, out))
	if code != 0 || !strings.Contains(out, "state      executed (2 of 2 approvals: alice, bob)") {
		t.Fatalf("approving over TLS: %d\n%s\n%s", code, out, errs)
	}
	clearEnv(t)

	// carol, added with her certificate, logs in with it.
	code, out, errs = as("alice", "alice", "officers", "add", "carol", "-pubkey", e.keygenOnly("carol"), "-cert", officer["carol"].cert)
	if code != 0 || !strings.Contains(out, "client certificate sha256 "+officer["carol"].sum+"\n") ||
		!strings.Contains(errs, `"client-cert-sha256": "`+officer["carol"].sum+`"`) {
		t.Fatalf("officers add -cert: %d\n%s\n%s", code, out, errs)
	}
	code, out, errs = as("bob", "bob", "approve", proposalID(t, out))
	if code != 0 || !strings.Contains(out, "state      executed") {
		t.Fatalf("approving carol: %d\n%s\n%s", code, out, errs)
	}
	noSecrets(t, "", out, errs)
	if code, out, errs := as("carol", "carol", "officers"); code != 0 || !strings.Contains(out, "carol\tactive\t") {
		t.Fatalf("carol with her certificate: %d\n%s\n%s", code, out, errs)
	}

	// Refusals.
	code, _, errs = as("alice", "", "keys")
	if code != 1 || !strings.Contains(errs, "officer endpoints need a client certificate from the configured CA (HTTP 403, client-certificate-required)") {
		t.Fatalf("without -cert: %d %s", code, errs)
	}
	if code, _, errs := as("alice", "bob", "keys"); code != 1 || !strings.Contains(errs, "login failed") || !strings.Contains(errs, "HTTP 401") {
		t.Fatalf("alice with bob's certificate: %d %s", code, errs)
	}
	if code, _, errs := as("carol", "alice", "officers"); code != 1 || !strings.Contains(errs, "login failed") {
		t.Fatalf("carol with alice's certificate: %d %s", code, errs)
	}
	code, _, errs = e.keyrackTTY(nil, "-key", e.files["alice"], "-cert", officer["alice"].cert, "-cert-key", officer["alice"].key, "keys")
	if code != 1 || !strings.Contains(errs, "certificate signed by unknown authority") || !strings.Contains(errs, "-ca FILE") {
		t.Fatalf("without -ca: %d %s", code, errs)
	}
	if code, _, errs := e.keyrackTTY(nil, "-ca", caFile, "-key", e.files["alice"], "-cert", officer["alice"].cert, "keys"); code != 2 || !strings.Contains(errs, "go together") {
		t.Fatalf("-cert without -cert-key: %d %s", code, errs)
	}
	// Health's summary needs no certificate; the status command trusts -ca
	// too.
	if code, out, errs := e.keyrackTTY(nil, "-ca", caFile, "status"); code != 0 || !strings.Contains(out, "appliance  ok") {
		t.Fatalf("status over TLS: %d %s %s", code, out, errs)
	}
}
