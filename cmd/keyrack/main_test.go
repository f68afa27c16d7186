package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
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
	"github.com/keyrack/keyrack/appliance/officerkey"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/hsm"
	"github.com/keyrack/keyrack/softhsm"
)

type env struct {
	t     *testing.T
	url   string
	mod   *hsm.Module
	dir   string
	files map[string]string // officer -> private key file
}

// clearEnv keeps the tester's own keyrack and ssh-agent settings out of
// the CLI under test.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, v := range []string{"KEYRACK_URL", "KEYRACK_OFFICER_KEY", "KEYRACK_OFFICER_PUBKEY", "KEYRACK_AGENT", "KEYRACK_KEY_PASSPHRASE", "SSH_AUTH_SOCK"} {
		t.Setenv(v, "")
	}
}

// newEnv runs an appliance (quorum 2) whose first officers, alice and bob,
// made their keys with keyrack officer keygen.
func newEnv(t *testing.T) *env {
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
	e := &env{t: t, mod: mod, dir: dir, files: map[string]string{}}
	var officers []appliance.OfficerKey
	for _, name := range []string{"alice", "bob"} {
		officers = append(officers, appliance.OfficerKey{Name: name, PublicKey: e.keygen(name)})
	}
	if err := appliance.BootstrapOfficers(ctx, db, officers); err != nil {
		t.Fatal(err)
	}
	app, err := appliance.New(ctx, cfg, mod, db, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
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
func proposalID(t *testing.T, out string) string {
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
		code, out, errs := e.keyrack("bob", "approve", proposalID(t, out))
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
	if _, out, _ := e.keyrack("bob", "proposals", "-state", "cancelled"); !strings.Contains(out, `create API client "c1"`) {
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
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ssh-agent did not make its socket: %s", agentOut.String())
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
