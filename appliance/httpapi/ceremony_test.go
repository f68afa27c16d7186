package httpapi

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/keyfile/keyfiletest"
	"github.com/keyrack/keyrack/appliance/officerkey"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/hsm/keywrap"
	"golang.org/x/crypto/ssh"
)

// ceremonyEnv is an appliance with its own store on the package's token,
// quorum 2 and three officers, each with an Ed25519 key of their own and
// logged in (creds holds their session tokens).
type ceremonyEnv struct {
	t     *testing.T
	srv   *Server
	ts    *httptest.Server
	db    *store.DB
	keys  map[string]ssh.Signer
	creds map[string]string
}

// newOfficerKey makes an officer key as `keyrack officer keygen` does.
func newOfficerKey(t *testing.T) ssh.Signer {
	t.Helper()
	priv, _, err := officerkey.Generate("test", nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := officerkey.LoadSigner(priv, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newCeremonyEnv makes the environment; opts change the configuration
// before the appliance starts with it.
func newCeremonyEnv(t *testing.T, quorum int, ttl string, opts ...func(*appliance.Config)) *ceremonyEnv {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	cfg, err := appliance.ParseConfig(strings.NewReader(fmt.Sprintf(
		`{"dev": true, "state_dir": %q, "officers": {"quorum": %d, "proposal_ttl": %q},
		  "token": {"module": %q, "label": %q, "pin_file": %q}}`,
		dir, quorum, ttl, testTok.Module, testTok.Label, testTok.PINFile)))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		o(&cfg)
	}
	db, err := store.OpenSQLite(ctx, cfg.Store.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	keys := map[string]ssh.Signer{}
	var officers []appliance.OfficerKey
	for _, name := range []string{"alice", "bob", "carol"} {
		keys[name] = newOfficerKey(t)
		officers = append(officers, appliance.OfficerKey{Name: name, PublicKey: officerkey.Authorized(keys[name].PublicKey())})
	}
	if err := appliance.BootstrapOfficers(ctx, db, officers); err != nil {
		t.Fatal(err)
	}
	srv, err := newServer(ctx, cfg, db, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	restoreToken(t)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	e := &ceremonyEnv{t: t, srv: srv, ts: ts, db: db, keys: keys, creds: map[string]string{}}
	for name := range keys {
		e.creds[name] = e.login(name, keys[name])
	}
	return e
}

// login logs officer in with key: a challenge, signed, for a session.
func (e *ceremonyEnv) login(officer string, key ssh.Signer) string {
	e.t.Helper()
	ch := e.do("", "POST", "/v1/login/challenge", map[string]any{"officer": officer})
	content, _ := ch.Body["content"].(string)
	if ch.Status != http.StatusOK || content == "" {
		e.t.Fatalf("login challenge for %s: %d %s", officer, ch.Status, ch.Raw)
	}
	sig, err := officerkey.Sign(key, officerkey.DomainLogin, []byte(content))
	if err != nil {
		e.t.Fatal(err)
	}
	a := e.do("", "POST", "/v1/login", map[string]any{"id": ch.Body["id"], "signature": sig})
	tok, _ := a.Body["token"].(string)
	if a.Status != http.StatusOK || tok == "" {
		e.t.Fatalf("login of %s: %d %s", officer, a.Status, a.Raw)
	}
	return tok
}

// approve signs proposal id's content as officer (with the officer's own
// key) and sends the approval.
func (e *ceremonyEnv) approve(officer, id string) answer {
	e.t.Helper()
	return e.approveWith(officer, e.keys[officer], id)
}

// approveWith sends officer's approval of id signed with key, whoever's
// key it is.
func (e *ceremonyEnv) approveWith(officer string, key ssh.Signer, id string) answer {
	e.t.Helper()
	p := e.do(officer, "GET", "/v1/proposals/"+id, nil)
	content, _ := p.Body["content"].(string)
	if p.Status != http.StatusOK || content == "" {
		e.t.Fatalf("proposal %s: %d %s", id, p.Status, p.Raw)
	}
	sig, err := officerkey.Sign(key, officerkey.DomainApproval, []byte(content))
	if err != nil {
		e.t.Fatal(err)
	}
	return e.do(officer, "POST", "/v1/proposals/"+id+"/approve", map[string]any{"signature": sig})
}

// propose sends a proposal as officer and, once it is accepted, the
// proposer's own signed approval: what `keyrack` does for a proposer. It
// answers with the approval's answer (or the proposal's refusal).
func (e *ceremonyEnv) propose(officer, method, path string, body any) answer {
	e.t.Helper()
	a := e.do(officer, method, path, body)
	if a.Status/100 != 2 || a.proposalID() == "" {
		return a
	}
	return e.approve(officer, a.proposalID())
}

type answer struct {
	Status int
	Body   map[string]any
	Raw    string
}

func (e *ceremonyEnv) do(officer, method, path string, body any) answer {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.ts.URL+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if officer != "" {
		tok := e.creds[officer]
		if tok == "" {
			tok = officer // a raw credential
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{Status: resp.StatusCode, Raw: string(raw)}
	json.Unmarshal(raw, &a.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		e.t.Fatalf("%s %s: Content-Type %q", method, path, ct)
	}
	return a
}

func (a answer) proposalID() string {
	p, _ := a.Body["proposal"].(map[string]any)
	id, _ := p["id"].(string)
	return id
}

func (a answer) errCode() string {
	eb, _ := a.Body["error"].(map[string]any)
	c, _ := eb["code"].(string)
	return c
}

func (e *ceremonyEnv) key(name string) store.Key {
	e.t.Helper()
	var k store.Key
	err := e.db.View(context.Background(), func(tx *store.Tx) error {
		var err error
		k, err = tx.GetKey(name)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return k
}

func (e *ceremonyEnv) auditActions() []string {
	var evs []store.AuditEvent
	e.db.View(context.Background(), func(tx *store.Tx) error {
		var err error
		evs, err = tx.AuditEvents(0, 1000)
		return err
	})
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Actor+" "+ev.Action+" "+ev.Result)
	}
	return out
}

var serialRoles = []map[string]any{{"type": "serial", "models": []string{"line-.*"}}}

func TestQuorumGenerate(t *testing.T) {
	e := newCeremonyEnv(t, 2, "1h")
	// The proposal alone is no approval, not even the proposer's: it
	// answers 202 with no approvals and the content officers sign.
	a := e.do("alice", "POST", "/v1/keys/generate", map[string]any{"name": "q-key", "roles": serialRoles})
	if a.Status != http.StatusAccepted || a.Body["executed"] != false || approvalsOf(a) != "" || contentOf(a) == "" {
		t.Fatalf("proposal: %d %s", a.Status, a.Raw)
	}
	id := a.proposalID()
	// The proposer's signed approval counts as one.
	if a := e.approve("alice", id); a.Status != http.StatusAccepted || a.Body["executed"] != false || approvalsOf(a) != "alice" {
		t.Fatalf("the proposer's approval: %d %s", a.Status, a.Raw)
	}
	// One officer's approval does nothing.
	if k := e.srv; k != nil {
		var err error
		e.db.View(context.Background(), func(tx *store.Tx) error { _, err = tx.GetKey("q-key"); return nil })
		if err == nil {
			t.Fatal("a key record exists after one approval")
		}
	}
	// The same officer twice does not count twice.
	if a := e.approve("alice", id); a.Status != http.StatusConflict || a.errCode() != "already-approved" {
		t.Fatalf("second approval by the proposer: %d %s", a.Status, a.Raw)
	}
	if _, err := testMod.FindKeyByLabel(context.Background(), "q-key"); err == nil {
		t.Fatal("the token has the key before the quorum")
	}
	a = e.approve("bob", id)
	if a.Status != http.StatusOK || a.Body["executed"] != true {
		t.Fatalf("quorum approval: %d %s", a.Status, a.Raw)
	}
	k := e.key("q-key")
	if k.State != store.KeyActive || k.Bits != 4096 || k.Origin != "generated" || k.KeyID == "" {
		t.Fatalf("record %+v", k)
	}
	hk, err := testMod.FindKey(context.Background(), k.CKAID)
	if err != nil {
		t.Fatal(err)
	}
	if i := hk.Info(); !i.Sensitive || i.Extractable || !i.Local {
		t.Fatalf("token object %+v", i)
	}
	// A third approval after execution is refused.
	if a := e.approve("carol", id); a.Status != http.StatusConflict {
		t.Fatalf("approval after execution: %d %s", a.Status, a.Raw)
	}
	// Refuse to overwrite: the name is taken.
	if a := e.propose("carol", "POST", "/v1/keys/generate", map[string]any{"name": "q-key", "roles": serialRoles}); a.Status != http.StatusConflict {
		t.Fatalf("generate over an existing name: %d %s", a.Status, a.Raw)
	}
	// GET shows it.
	g := e.do("carol", "GET", "/v1/keys/q-key", nil)
	if g.Status != 200 || g.Body["origin"] != "generated" || g.Body["sign-key-sha3-384"] != k.KeyID || g.Body["public-key"] == "" {
		t.Fatalf("GET key: %s", g.Raw)
	}
	tokObj, _ := g.Body["token"].(map[string]any)
	if tokObj["present"] != true || tokObj["extractable"] != false {
		t.Fatalf("GET key token part: %s", g.Raw)
	}
	acts := strings.Join(e.auditActions(), "\n")
	for _, want := range []string{"officer:alice proposal.create ok", "officer:alice proposal.approve ok", "officer:bob proposal.approve ok", "officer:bob key.generate ok"} {
		if !strings.Contains(acts, want) {
			t.Errorf("audit lacks %q:\n%s", want, acts)
		}
	}
	if n, err := e.db.VerifyAudit(context.Background()); err != nil || n == 0 {
		t.Fatalf("audit chain: %d %v", n, err)
	}
}

// approvalsOf lists the approvers of an answer's proposal, comma-separated.
func approvalsOf(a answer) string {
	p, _ := a.Body["proposal"].(map[string]any)
	list, _ := p["approvals"].([]any)
	var names []string
	for _, n := range list {
		s, _ := n.(string)
		names = append(names, s)
	}
	return strings.Join(names, ",")
}

// contentOf is an answer's proposal's content, what approvals sign.
func contentOf(a answer) string {
	p, _ := a.Body["proposal"].(map[string]any)
	c, _ := p["content"].(string)
	return c
}

func TestDisableIsNeverOneClick(t *testing.T) {
	e := newCeremonyEnv(t, 2, "1h")
	id := e.propose("alice", "POST", "/v1/keys/generate", map[string]any{"name": "d-key", "roles": serialRoles}).proposalID()
	e.approve("bob", id)
	a := e.propose("alice", "POST", "/v1/keys/d-key/disable", nil)
	if a.Status != http.StatusAccepted || e.key("d-key").State != store.KeyActive {
		t.Fatalf("one officer disabled a key: %d %s", a.Status, a.Raw)
	}
	if a := e.approve("carol", a.proposalID()); a.Status != 200 {
		t.Fatalf("%d %s", a.Status, a.Raw)
	}
	if st := e.key("d-key").State; st != store.KeyDisabled {
		t.Fatalf("state %s", st)
	}
	// Destroy: gone from the token, record kept as destroyed.
	a = e.propose("bob", "POST", "/v1/keys/d-key/destroy", nil)
	e.approve("carol", a.proposalID())
	k := e.key("d-key")
	if k.State != store.KeyDestroyed {
		t.Fatalf("after destroy: %s", k.State)
	}
	if _, err := testMod.FindKey(context.Background(), k.CKAID); err == nil {
		t.Fatal("destroyed key still in the token")
	}
	// Any officer can cancel a pending proposal; none can act alone.
	a = e.propose("alice", "POST", "/v1/keys/generate", map[string]any{"name": "c-key", "roles": serialRoles})
	if c := e.do("bob", "POST", "/v1/proposals/"+a.proposalID()+"/cancel", nil); c.Status != 200 {
		t.Fatalf("cancel: %d %s", c.Status, c.Raw)
	}
	if c := e.approve("carol", a.proposalID()); c.Status != http.StatusConflict {
		t.Fatalf("approving a cancelled proposal: %d %s", c.Status, c.Raw)
	}
}

// loginAnswer asks for a challenge for officer and answers it with a
// signature by key over the challenge's content in domain: what a login
// is, with every part the caller's choice, so that the ways one fails can
// be tried. It returns the answer to POST /v1/login.
func (e *ceremonyEnv) loginAnswer(officer string, key ssh.Signer, domain string) answer {
	e.t.Helper()
	ch := e.do("", "POST", "/v1/login/challenge", map[string]any{"officer": officer})
	content, _ := ch.Body["content"].(string)
	if ch.Status != http.StatusOK || content == "" {
		e.t.Fatalf("login challenge for %s: %d %s", officer, ch.Status, ch.Raw)
	}
	sig, err := officerkey.Sign(key, domain, []byte(content))
	if err != nil {
		e.t.Fatal(err)
	}
	return e.do("", "POST", "/v1/login", map[string]any{"id": ch.Body["id"], "signature": sig})
}

func TestAuthentication(t *testing.T) {
	// This test fails more authentications from its one address than the
	// default limit lets through in a window; the throttling itself is
	// TestAuthFailuresAreThrottled's and TestLoginFailuresAreThrottled's.
	e := newCeremonyEnv(t, 2, "1h", func(c *appliance.Config) { c.Limits.AuthFailures = 1000 })
	// Officers have no credential of their own any more, only sessions
	// (krk_s_) they log in for with their key: a credential of the old
	// krk_o_ form, right name or not, and a session token nobody was given
	// are refused like garbage.
	for name, tc := range map[string]struct {
		cred   string
		status int
	}{
		"none":            {"", 401},
		"garbage":         {"hello", 401},
		"old credential":  {"krk_o_alice_" + strings.Repeat("0", 64), 401},
		"old unknown":     {"krk_o_mallory_" + strings.Repeat("0", 64), 401},
		"unknown session": {"krk_s_" + strings.Repeat("0", 64), 401},
		"changed session": {e.creds["alice"][:len(e.creds["alice"])-1] + flipHex(e.creds["alice"][len(e.creds["alice"])-1:]), 401},
		"API key":         {"krk_c_line-1_" + strings.Repeat("0", 64), 403},
	} {
		req, _ := http.NewRequest("GET", e.ts.URL+"/v1/keys", nil)
		if tc.cred != "" {
			req.Header.Set("Authorization", "Bearer "+tc.cred)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %d, want %d", name, resp.StatusCode, tc.status)
		}
	}
	// Failed logins: each gets the same 401 and no session.
	mallory := newOfficerKey(t)
	for name, tc := range map[string]struct {
		officer string
		key     ssh.Signer
		domain  string
	}{
		"bad signature":   {"alice", e.keys["alice"], officerkey.DomainApproval}, // alice's key, but not a login signature
		"unknown officer": {"mallory", mallory, officerkey.DomainLogin},
		"wrong key":       {"alice", e.keys["bob"], officerkey.DomainLogin},
	} {
		if a := e.loginAnswer(tc.officer, tc.key, tc.domain); a.Status != http.StatusUnauthorized || a.errCode() != "login-failed" || a.Body["token"] != nil {
			t.Errorf("%s: %d %s", name, a.Status, a.Raw)
		}
	}
	// Add an officer through the quorum, with the key they made. Nothing
	// secret comes back: the old model's credential, shown once, is gone;
	// instead the new officer logs in with their key, and with no other.
	daveKey := newOfficerKey(t)
	davePub := officerkey.Authorized(daveKey.PublicKey())
	a := e.propose("alice", "POST", "/v1/officers", map[string]string{"name": "dave", "public-key": davePub + " dave@laptop"})
	if a.Status != http.StatusAccepted {
		t.Fatalf("propose dave: %d %s", a.Status, a.Raw)
	}
	a = e.approve("bob", a.proposalID())
	if a.Status != http.StatusOK || a.Body["executed"] != true {
		t.Fatalf("add dave: %d %s", a.Status, a.Raw)
	}
	if _, ok := a.Body["credential"]; ok || strings.Contains(a.Raw, "krk_") {
		t.Fatalf("adding an officer answered with a credential: %s", a.Raw)
	}
	if a := e.loginAnswer("dave", e.keys["alice"], officerkey.DomainLogin); a.Status != http.StatusUnauthorized || a.Body["token"] != nil {
		t.Fatalf("dave logged in with another officer's key: %d %s", a.Status, a.Raw)
	}
	if a := e.loginAnswer("dave", newOfficerKey(t), officerkey.DomainLogin); a.Status != http.StatusUnauthorized || a.Body["token"] != nil {
		t.Fatalf("dave logged in with a key of nobody's: %d %s", a.Status, a.Raw)
	}
	cred := e.login("dave", daveKey)
	if g := e.do(cred, "GET", "/v1/officers", nil); g.Status != 200 {
		t.Fatalf("new officer cannot authenticate: %d", g.Status)
	}
	// What the store keeps of an officer is their public key (the old
	// model kept a hash of the credential): no secret, nothing the session
	// token can be read from; the session itself is kept as a hash.
	var o store.Officer
	var sessionOfficer, rawLookup string
	e.db.View(context.Background(), func(tx *store.Tx) error {
		o, _ = tx.GetOfficerByName("dave")
		h := sha256.Sum256([]byte(cred))
		byHash, _ := tx.GetSession(h[:])
		byToken, _ := tx.GetSession([]byte(cred))
		sessionOfficer, rawLookup = byHash.Officer, byToken.Officer
		return nil
	})
	if o.PublicKey != davePub {
		t.Fatalf("dave's record keeps %q, want his public key %q", o.PublicKey, davePub)
	}
	if sessionOfficer != "dave" || rawLookup != "" {
		t.Fatalf("session not stored as its hash: by hash %q, by token %q", sessionOfficer, rawLookup)
	}
	// Removing officers down to below the quorum is refused.
	for _, name := range []string{"carol", "dave"} {
		a := e.propose("alice", "DELETE", "/v1/officers/"+name, nil)
		if a.Status != http.StatusAccepted {
			t.Fatalf("remove %s: %d %s", name, a.Status, a.Raw)
		}
		if a := e.approve("bob", a.proposalID()); a.Status != http.StatusOK {
			t.Fatalf("approve removing %s: %d %s", name, a.Status, a.Raw)
		}
	}
	// A removed officer's session ends, and they cannot log in again.
	if g := e.do(cred, "GET", "/v1/officers", nil); g.Status != 401 {
		t.Fatalf("removed officer still authenticates: %d", g.Status)
	}
	if a := e.loginAnswer("dave", daveKey, officerkey.DomainLogin); a.Status != http.StatusUnauthorized || a.Body["token"] != nil {
		t.Fatalf("removed officer logged in: %d %s", a.Status, a.Raw)
	}
	if a := e.propose("alice", "DELETE", "/v1/officers/bob", nil); a.Status != http.StatusConflict || a.errCode() != "quorum-unreachable" {
		t.Fatalf("removal below quorum: %d %s", a.Status, a.Raw)
	}
}

// flipHex is another hex digit than d.
func flipHex(d string) string {
	if d == "0" {
		return "1"
	}
	return "0"
}

func TestProposalExpiry(t *testing.T) {
	// The proposer's own approval must come in time: a TTL of 500ms (not
	// 50ms as before proposals took a second request) leaves room for it.
	e := newCeremonyEnv(t, 2, "500ms")
	a := e.propose("alice", "POST", "/v1/keys/generate", map[string]any{"name": "x-key", "roles": serialRoles})
	if a.Status != http.StatusAccepted {
		t.Fatalf("proposal: %d %s", a.Status, a.Raw)
	}
	time.Sleep(600 * time.Millisecond)
	if b := e.approve("bob", a.proposalID()); b.Status != http.StatusConflict || b.errCode() != "proposal-expired" {
		t.Fatalf("late approval: %d %s", b.Status, b.Raw)
	}
	if g := e.do("bob", "GET", "/v1/proposals/"+a.proposalID(), nil); g.Body["state"] != "expired" {
		t.Fatalf("state after expiry: %s", g.Raw)
	}
}

var (
	brandOnce sync.Once
	brandKey  *rsa.PrivateKey
)

func outsideBrandKey(t *testing.T) *rsa.PrivateKey {
	brandOnce.Do(func() {
		var err error
		brandKey, err = rsa.GenerateKey(rand.Reader, 4096)
		if err != nil {
			t.Fatal(err)
		}
	})
	return brandKey
}

func countTokenKeys(t *testing.T) int {
	ks, err := testMod.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(ks)
}

func TestWrappedImport(t *testing.T) {
	e := newCeremonyEnv(t, 2, "1h")
	brand := outsideBrandKey(t)
	ik := e.do("", "GET", "/v1/import-key", nil)
	block, _ := pem.Decode([]byte(ik.Body["public_key_pem"].(string)))
	pubAny, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(brand)
	blob, err := keywrap.Wrap(pubAny.(*rsa.PublicKey), der)
	if err != nil {
		t.Fatal(err)
	}
	// An import names the key inside the blob (what `keyrack wrap` prints).
	brandID := asserts.RSAPublicKey(&brand.PublicKey).ID()
	a := e.propose("alice", "POST", "/v1/keys/import", map[string]any{"name": "w-key", "roles": serialRoles, "blob": blob, "sign-key-sha3-384": brandID})
	if a.Status != http.StatusAccepted {
		t.Fatalf("%d %s", a.Status, a.Raw)
	}
	// Neither the proposal nor its content, which approvals sign, carries
	// the blob: its digest stands for it.
	if !strings.Contains(a.Raw, "sha256") || strings.Contains(a.Raw, string(mustB64(blob))) {
		t.Fatalf("proposal shows the blob instead of its digest: %s", a.Raw)
	}
	if c := contentOf(a); !strings.Contains(c, "blob-sha256") || strings.Contains(c, string(mustB64(blob))) {
		t.Fatalf("proposal content carries the blob instead of its digest: %s", c)
	}
	a = e.approve("bob", a.proposalID())
	if a.Status != 200 {
		t.Fatalf("%d %s", a.Status, a.Raw)
	}
	k := e.key("w-key")
	hk, err := testMod.FindKey(context.Background(), k.CKAID)
	if err != nil {
		t.Fatal(err)
	}
	info := hk.Info()
	if info.Local || !info.Sensitive || info.Extractable || k.Origin != "imported" {
		t.Fatalf("imported key %+v, record origin %s", info, k.Origin)
	}
	d := sha512.Sum512([]byte("x"))
	sig, err := hk.Sign(nil, d[:], crypto.SHA512)
	if err != nil {
		t.Fatal(err)
	}
	if err := rsa.VerifyPKCS1v15(&brand.PublicKey, crypto.SHA512, d[:], sig); err != nil {
		t.Fatal("imported key's signature does not verify with the original public key")
	}

	// A blob for another appliance: refused at execution, nothing left.
	other, _ := rsa.GenerateKey(rand.Reader, 3072)
	bad, _ := keywrap.Wrap(&other.PublicKey, der)
	before := countTokenKeys(t)
	a = e.propose("alice", "POST", "/v1/keys/import", map[string]any{"name": "bad-key", "roles": serialRoles, "blob": bad, "sign-key-sha3-384": brandID})
	b := e.approve("bob", a.proposalID())
	if b.Status != http.StatusBadRequest || b.errCode() != "bad-wrapped-key" {
		t.Fatalf("foreign blob: %d %s", b.Status, b.Raw)
	}
	if after := countTokenKeys(t); after != before {
		t.Fatalf("token keys %d -> %d after a refused import", before, after)
	}
	if k := e.key("bad-key"); k.State != store.KeyFailed {
		t.Fatalf("record of the refused import: %s", k.State)
	}
	if g := e.do("alice", "GET", "/v1/proposals/"+a.proposalID(), nil); g.Body["state"] != "failed" {
		t.Fatalf("proposal after failure: %s", g.Raw)
	}
}

func mustB64(b []byte) []byte {
	s, _ := json.Marshal(b)
	return bytes.Trim(s, `"`)
}

func TestArmoredUpload(t *testing.T) {
	e := newCeremonyEnv(t, 2, "1h")
	plain := keyfiletest.GPGExport(t, 4096, "")
	a := e.propose("alice", "POST", "/v1/keys/upload", map[string]any{"name": "u-key", "roles": serialRoles, "key": plain})
	if a.Status != http.StatusAccepted {
		t.Fatalf("%d %s", a.Status, a.Raw)
	}
	if a := e.approve("bob", a.proposalID()); a.Status != 200 {
		t.Fatalf("%d %s", a.Status, a.Raw)
	}
	if k := e.key("u-key"); k.State != store.KeyActive || k.Origin != "imported" {
		t.Fatalf("%+v", k)
	}
	// The proposal stored only a wrapped blob, never the armored key.
	var ps []store.Proposal
	e.db.View(context.Background(), func(tx *store.Tx) error { ps, _ = tx.ListProposals("", 0); return nil })
	for _, p := range ps {
		if strings.Contains(p.Payload, "PRIVATE KEY") || strings.Contains(p.Payload, string(mustB64(plain))[:40]) {
			t.Fatal("a proposal holds the plaintext key")
		}
	}

	small, _ := rsa.GenerateKey(rand.Reader, 2048)
	small8, _ := x509.MarshalPKCS8PrivateKey(small)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec8, _ := x509.MarshalPKCS8PrivateKey(ec)
	before := countTokenKeys(t)
	for name, tc := range map[string]struct {
		key  []byte
		want string
	}{
		"passphrase": {keyfiletest.GPGExport(t, 4096, "secret"), "passphrase"},
		"truncated":  {plain[:len(plain)/2], "not a private key"},
		"EC":         {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ec8}), "not an RSA key"},
		"RSA-2048":   {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: small8}), "too small"},
		"garbage":    {[]byte("garbage"), "not a private key"},
	} {
		a := e.do("alice", "POST", "/v1/keys/upload", map[string]any{"name": "r-" + strings.ToLower(name[:2]), "roles": serialRoles, "key": tc.key})
		if a.Status != http.StatusBadRequest || !strings.Contains(a.Raw, tc.want) {
			t.Errorf("%s: %d %s", name, a.Status, a.Raw)
		}
		if a.proposalID() != "" {
			t.Errorf("%s: a proposal was made", name)
		}
	}
	if after := countTokenKeys(t); after != before {
		t.Fatalf("token keys %d -> %d after refused uploads", before, after)
	}
}

func TestBadRequests(t *testing.T) {
	e := newCeremonyEnv(t, 2, "1h")
	for name, tc := range map[string]struct {
		method, path, ct, body string
		status                 int
	}{
		"not json":         {"POST", "/v1/keys/generate", "application/json", "{", 400},
		"wrong type":       {"POST", "/v1/keys/generate", "text/plain", `{}`, 415},
		"unknown field":    {"POST", "/v1/keys/generate", "application/json", `{"name":"a","roles":[],"pin":"1"}`, 400},
		"bad name":         {"POST", "/v1/keys/generate", "application/json", `{"name":"A B","roles":[{"type":"serial"}]}`, 400},
		"no roles":         {"POST", "/v1/keys/generate", "application/json", `{"name":"a"}`, 400},
		"unknown role":     {"POST", "/v1/keys/generate", "application/json", `{"name":"a","roles":[{"type":"snap-declaration"}]}`, 400},
		"bad regex":        {"POST", "/v1/keys/generate", "application/json", `{"name":"a","roles":[{"type":"serial","models":["("]}]}`, 400},
		"short blob":       {"POST", "/v1/keys/import", "application/json", `{"name":"a","roles":[{"type":"serial"}],"blob":"AAAA","sign-key-sha3-384":"x"}`, 400},
		"no such key":      {"POST", "/v1/keys/nope/disable", "", "", 404},
		"no proposal":      {"POST", "/v1/proposals/nope/approve", "application/json", `{"signature":"AAAA"}`, 404},
		"approval no json": {"POST", "/v1/proposals/nope/approve", "", "", 415},
		"bad audit query":  {"GET", "/v1/audit?limit=0", "", "", 400},
	} {
		req, _ := http.NewRequest(tc.method, e.ts.URL+tc.path, strings.NewReader(tc.body))
		if tc.ct != "" {
			req.Header.Set("Content-Type", tc.ct)
		}
		req.Header.Set("Authorization", "Bearer "+e.creds["alice"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != "application/json" || !strings.Contains(string(raw), `"message"`) {
			t.Errorf("%s: %d %s", name, resp.StatusCode, raw)
		}
	}
}
