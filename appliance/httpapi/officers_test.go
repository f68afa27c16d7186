package httpapi

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/auditverify"
	"github.com/keyrack/keyrack/appliance/officerkey"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/hsm/keywrap"
	"github.com/snapcore/snapd/asserts"
)

// Attacks on M-of-N, played by the officers themselves and by whoever can
// write to the store. Each is refused because of a rule of the officer
// model: officers are keys of their own, approvals are signatures over the
// proposal's content, and the quorum is counted, in the transaction that
// acts on it, from signatures by officers active at that moment.

// sqlHandle opens the test store's SQLite file directly, as its
// administrator would.
func (e *ceremonyEnv) sqlHandle() *sql.DB {
	e.t.Helper()
	db, err := sql.Open(store.SQLiteDriver, e.srv.cfg.Store.Path)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { db.Close() })
	return db
}

func (e *ceremonyEnv) proposalState(id string) (string, []string) {
	e.t.Helper()
	a := e.do("bob", "GET", "/v1/proposals/"+id, nil)
	if a.Status != http.StatusOK {
		e.t.Fatalf("proposal %s: %d %s", id, a.Status, a.Raw)
	}
	var approvals []string
	for _, x := range a.Body["approvals"].([]any) {
		approvals = append(approvals, x.(string))
	}
	return a.Body["state"].(string), approvals
}

// addOfficer adds an officer with a key of their own through the quorum
// (alice proposes, bob approves) and logs them in.
func (e *ceremonyEnv) addOfficer(name string) ssh.Signer {
	e.t.Helper()
	key := newOfficerKey(e.t)
	a := e.propose("alice", "POST", "/v1/officers", map[string]any{"name": name, "public-key": officerkey.Authorized(key.PublicKey())})
	if a.Status != http.StatusAccepted {
		e.t.Fatalf("proposing officer %s: %d %s", name, a.Status, a.Raw)
	}
	for _, o := range []string{"bob", "carol"} {
		if b := e.approve(o, a.proposalID()); b.Status/100 != 2 {
			e.t.Fatalf("approving officer %s: %d %s", name, b.Status, b.Raw)
		} else if b.Body["executed"] == true {
			break
		}
	}
	e.keys[name] = key
	e.creds[name] = e.login(name, key)
	return key
}

// TestOneOfficerCannotBeTwo: no officer ever receives another's secret,
// two officers cannot share a key, and nobody logs in or approves with a
// key other than their own.
func TestOneOfficerCannotBeTwo(t *testing.T) {
	e := newCeremonyEnv(t, 2, "1h")
	// Bob tries to enrol a "dave" whose key is his own: refused before
	// anyone approves it.
	a := e.do("bob", "POST", "/v1/officers", map[string]any{"name": "dave", "public-key": officerkey.Authorized(e.keys["bob"].PublicKey())})
	if a.Status != http.StatusConflict || a.errCode() != "key-in-use" {
		t.Fatalf("an officer with bob's key: %d %s", a.Status, a.Raw)
	}
	// Adding an officer hands nobody a secret: the executing approval's
	// answer carries none, and the store keeps the public key only.
	daveKey := newOfficerKey(t)
	a = e.propose("bob", "POST", "/v1/officers", map[string]any{"name": "dave", "public-key": officerkey.Authorized(daveKey.PublicKey())})
	if a.Status != http.StatusAccepted || !strings.Contains(a.Raw, officerkey.Fingerprint(daveKey.PublicKey())) {
		t.Fatalf("proposing dave: %d %s", a.Status, a.Raw)
	}
	b := e.approve("alice", a.proposalID())
	if b.Status != http.StatusOK || b.Body["executed"] != true || b.Body["credential"] != nil || strings.Contains(b.Raw, "krk_") {
		t.Fatalf("adding dave: %d %s", b.Status, b.Raw)
	}
	var dave store.Officer
	e.db.View(context.Background(), func(tx *store.Tx) (err error) { dave, err = tx.GetOfficerByName("dave"); return err })
	if dave.PublicKey != officerkey.Authorized(daveKey.PublicKey()) {
		t.Fatalf("dave's record holds %q", dave.PublicKey)
	}
	// Bob cannot log in as dave (or alice) with his own key.
	for _, victim := range []string{"dave", "alice"} {
		ch := e.do("", "POST", "/v1/login/challenge", map[string]any{"officer": victim})
		sig, _ := officerkey.Sign(e.keys["bob"], officerkey.DomainLogin, []byte(ch.Body["content"].(string)))
		if l := e.do("", "POST", "/v1/login", map[string]any{"id": ch.Body["id"], "signature": sig}); l.Status != http.StatusUnauthorized {
			t.Fatalf("bob logging in as %s: %d %s", victim, l.Status, l.Raw)
		}
	}
	// Nor approve as himself with a signature made by another key, nor
	// have one approval count twice.
	a = e.propose("bob", "POST", "/v1/keys/generate", map[string]any{"name": "two-of-me", "roles": serialRoles})
	id := a.proposalID()
	if b := e.approve("bob", id); b.Status != http.StatusConflict || b.errCode() != "already-approved" {
		t.Fatalf("bob approving twice: %d %s", b.Status, b.Raw)
	}
	if b := e.approveWith("carol", e.keys["bob"], id); b.Status != http.StatusForbidden || b.errCode() != "bad-approval" {
		t.Fatalf("carol's approval signed with bob's key: %d %s", b.Status, b.Raw)
	}
	if st, approvals := e.proposalState(id); st != "pending" || len(approvals) != 1 {
		t.Fatalf("after the attempts: %s %v", st, approvals)
	}
	if !strings.Contains(strings.Join(e.auditActions(), "\n"), "officer:carol proposal.approve refused: ") {
		t.Fatalf("the refused approval is not in the audit log:\n%s", strings.Join(e.auditActions(), "\n"))
	}
}

// TestRemovedOfficersApprovalsDoNotCount: alice proposes; bob and carol
// remove alice; bob alone cannot then carry out alice's proposal. What
// alice approved before her removal stops counting, and so does an
// approval by her found in the store afterwards.
func TestRemovedOfficersApprovalsDoNotCount(t *testing.T) {
	e := newCeremonyEnv(t, 2, "1h")
	e.addOfficer("dave")
	aliceKey := e.keys["alice"]
	p1 := e.propose("alice", "POST", "/v1/keys/generate", map[string]any{"name": "alices-key", "roles": serialRoles}).proposalID()
	// Bob proposes p2, and alice approves it before she is removed: at
	// quorum 3 (set below) that is two of three.
	p2 := e.propose("bob", "POST", "/v1/keys/generate", map[string]any{"name": "bobs-key", "roles": serialRoles}).proposalID()
	p2content := e.do("bob", "GET", "/v1/proposals/"+p2, nil).Body["content"].(string)

	rm := e.propose("bob", "DELETE", "/v1/officers/alice", nil)
	if b := e.approve("carol", rm.proposalID()); b.Status != http.StatusOK || b.Body["executed"] != true {
		t.Fatalf("removing alice: %d %s", b.Status, b.Raw)
	}
	// Alice's own proposal went with her.
	if st, _ := e.proposalState(p1); st != "cancelled" {
		t.Fatalf("alice's proposal after her removal: %s", st)
	}
	if b := e.approve("bob", p1); b.Status != http.StatusConflict {
		t.Fatalf("bob approving the removed officer's proposal: %d %s", b.Status, b.Raw)
	}
	// Her session ended with her.
	if a := e.do("alice", "GET", "/v1/keys", nil); a.Status != http.StatusUnauthorized {
		t.Fatalf("the removed officer's session: %d", a.Status)
	}
	// Three officers remain; the quorum becomes three.
	q := e.propose("bob", "POST", "/v1/quorum", map[string]any{"quorum": 3})
	if b := e.approve("carol", q.proposalID()); b.Status != http.StatusOK {
		t.Fatalf("quorum 3: %d %s", b.Status, b.Raw)
	}
	// An approval of p2 by alice, with her genuine signature, found in
	// the store after her removal (a race, or the store's administrator):
	// it does not count, so carol's approval makes two of three, not
	// three.
	sig, _ := officerkey.Sign(aliceKey, officerkey.DomainApproval, []byte(p2content))
	if _, err := e.sqlHandle().Exec(`INSERT INTO approvals (proposal_id, officer, signature, created_us) VALUES (?, 'alice', ?, 1)`, p2, sig); err != nil {
		t.Fatal(err)
	}
	if b := e.approve("carol", p2); b.Status != http.StatusAccepted {
		t.Fatalf("carol's approval with a removed officer's in the store: %d %s", b.Status, b.Raw)
	}
	if st, approvals := e.proposalState(p2); st != "pending" || len(approvals) != 3 {
		t.Fatalf("p2: %s %v", st, approvals)
	}
	if b := e.approve("dave", p2); b.Status != http.StatusOK || b.Body["executed"] != true {
		t.Fatalf("three active officers: %d %s", b.Status, b.Raw)
	}
}

// TestApprovalSignsTheContent: an approval is a signature over exactly
// the proposal's content, in the approval domain: one over other content
// (another proposal, a login challenge) is refused, and so is a proposal
// whose record was changed in the store after officers signed it.
func TestApprovalSignsTheContent(t *testing.T) {
	e := newCeremonyEnv(t, 2, "1h")
	p1 := e.propose("alice", "POST", "/v1/keys/generate", map[string]any{"name": "narrow", "roles": serialRoles}).proposalID()
	p2 := e.propose("alice", "POST", "/v1/keys/generate", map[string]any{"name": "other", "roles": serialRoles}).proposalID()
	other := e.do("bob", "GET", "/v1/proposals/"+p2, nil).Body["content"].(string)
	content := e.do("bob", "GET", "/v1/proposals/"+p1, nil).Body["content"].(string)
	for name, sig := range map[string]func() ([]byte, error){
		"another proposal's content": func() ([]byte, error) {
			return officerkey.Sign(e.keys["bob"], officerkey.DomainApproval, []byte(other))
		},
		"the content in the login domain": func() ([]byte, error) {
			return officerkey.Sign(e.keys["bob"], officerkey.DomainLogin, []byte(content))
		},
		"the content with a byte changed": func() ([]byte, error) {
			return officerkey.Sign(e.keys["bob"], officerkey.DomainApproval, []byte(strings.Replace(content, "narrow", "narrox", 1)))
		},
	} {
		s, err := sig()
		if err != nil {
			t.Fatal(err)
		}
		if b := e.do("bob", "POST", "/v1/proposals/"+p1+"/approve", map[string]any{"signature": s}); b.Status != http.StatusForbidden || b.errCode() != "bad-approval" {
			t.Fatalf("%s: %d %s", name, b.Status, b.Raw)
		}
	}
	if st, _ := e.proposalState(p1); st != "pending" {
		t.Fatalf("state %s", st)
	}

	// The store's administrator widens the roles of a proposal alice
	// signed: bob's approval is refused, nothing is made.
	wide := `{"name":"narrow","roles":[{"type":"serial"},{"type":"model"},{"type":"system-user"}]}`
	db := e.sqlHandle()
	if _, err := db.Exec(`UPDATE proposals SET payload = ? WHERE id = ?`, wide, p1); err != nil {
		t.Fatal(err)
	}
	if b := e.approve("bob", p1); b.Status != http.StatusConflict || b.errCode() != "content-changed" {
		t.Fatalf("approving an edited proposal: %d %s", b.Status, b.Raw)
	}
	// Editing the content to match: bob now signs what he is shown, but
	// alice's signature is over the old content, so there is one valid
	// approval, not two.
	var created, expires int64
	db.QueryRow(`SELECT created_us, expires_us FROM proposals WHERE id = ?`, p1).Scan(&created, &expires)
	newContent := strings.Replace(content, `"params":{"name":"narrow","roles":[{"models":["line-.*"],"type":"serial"}]}`,
		`"params":{"name":"narrow","roles":[{"type":"serial"},{"type":"model"},{"type":"system-user"}]}`, 1)
	if newContent == content {
		t.Fatalf("test setup: content not changed: %s", content)
	}
	if _, err := db.Exec(`UPDATE proposals SET content = ? WHERE id = ?`, newContent, p1); err != nil {
		t.Fatal(err)
	}
	b := e.approve("bob", p1)
	if b.Status == http.StatusOK || b.Body["executed"] == true {
		t.Fatalf("an edited proposal executed: %d %s", b.Status, b.Raw)
	}
	if _, err := testMod.FindKeyByLabel(context.Background(), "narrow"); err == nil {
		t.Fatal("the token made the key of an edited proposal")
	}
	// An approval row moved to another officer's name does not count
	// either: its signature is not by that officer's key.
	if _, err := db.Exec(`UPDATE approvals SET officer = 'carol' WHERE proposal_id = ? AND officer = 'alice'`, p2); err != nil {
		t.Fatal(err)
	}
	if b := e.approve("bob", p2); b.Status == http.StatusOK || b.Body["executed"] == true {
		t.Fatalf("a re-attributed approval counted: %d %s", b.Status, b.Raw)
	}
}

// TestRacingApprovalsCountOnce: twenty approvals by one officer sent at
// once count once.
func TestRacingApprovalsCountOnce(t *testing.T) {
	e := newCeremonyEnv(t, 3, "1h")
	id := e.propose("alice", "POST", "/v1/keys/generate", map[string]any{"name": "raced", "roles": serialRoles}).proposalID()
	content := e.do("bob", "GET", "/v1/proposals/"+id, nil).Body["content"].(string)
	sig, err := officerkey.Sign(e.keys["bob"], officerkey.DomainApproval, []byte(content))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	codes := make(chan int, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes <- e.do("bob", "POST", "/v1/proposals/"+id+"/approve", map[string]any{"signature": sig}).Status
		}()
	}
	wg.Wait()
	close(codes)
	accepted := 0
	for c := range codes {
		switch c {
		case http.StatusAccepted:
			accepted++
		case http.StatusConflict:
		default:
			t.Errorf("racing approval answered %d", c)
		}
	}
	if st, approvals := e.proposalState(id); accepted != 1 || st != "pending" || len(approvals) != 2 {
		t.Fatalf("%d accepted; %s with %v", accepted, st, approvals)
	}
}

// TestOfficerSessions: a login signature is good once; without a session
// nothing on the officer side answers; a factory API key is no officer.
func TestOfficerSessions(t *testing.T) {
	e := newCeremonyEnv(t, 2, "1h")
	ch := e.do("", "POST", "/v1/login/challenge", map[string]any{"officer": "alice"})
	sig, _ := officerkey.Sign(e.keys["alice"], officerkey.DomainLogin, []byte(ch.Body["content"].(string)))
	if l := e.do("", "POST", "/v1/login", map[string]any{"id": ch.Body["id"], "signature": sig}); l.Status != http.StatusOK {
		t.Fatalf("login: %d %s", l.Status, l.Raw)
	}
	if l := e.do("", "POST", "/v1/login", map[string]any{"id": ch.Body["id"], "signature": sig}); l.Status != http.StatusUnauthorized {
		t.Fatalf("the same login again: %d %s", l.Status, l.Raw)
	}
	// By public key instead of name.
	ch = e.do("", "POST", "/v1/login/challenge", map[string]any{"public-key": officerkey.Authorized(e.keys["carol"].PublicKey())})
	if !strings.Contains(ch.Body["content"].(string), `"officer":"carol"`) {
		t.Fatalf("challenge by key: %s", ch.Raw)
	}
	for _, tok := range []string{"", "krk_s_" + strings.Repeat("0", 64), "krk_o_alice_" + strings.Repeat("0", 64)} {
		if a := e.do(tok, "GET", "/v1/keys", nil); a.Status != http.StatusUnauthorized {
			t.Fatalf("bearer %q: %d", tok, a.Status)
		}
	}
	if a := e.do("alice", "GET", "/v1/keys", nil); a.Status != http.StatusOK {
		t.Fatalf("alice's session: %d", a.Status)
	}
}

// TestOfficerCallsNeedTLS: on an appliance that is not a dev appliance, an
// officer's login or session from another machine over plain HTTP is
// refused before anything is read; over TLS, or from this machine, it is
// served.
func TestOfficerCallsNeedTLS(t *testing.T) {
	e := newCeremonyEnv(t, 2, "1h", func(c *appliance.Config) { c.Dev = false })
	call := func(remote string, withTLS bool, method, path, body string) (int, string) {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.RemoteAddr = remote
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Authorization", "Bearer "+e.creds["alice"])
		if withTLS {
			req.TLS = &tls.ConnectionState{}
		}
		rec := httptest.NewRecorder()
		e.srv.Handler().ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	for _, tc := range []struct {
		method, path, body string
	}{
		{"GET", "/v1/keys", ""},
		{"POST", "/v1/login/challenge", `{"officer":"alice"}`},
		{"POST", "/v1/keys/upload", `{"name":"x","roles":[{"type":"serial"}],"key":"AAAA"}`},
	} {
		if code, body := call("192.0.2.10:40000", false, tc.method, tc.path, tc.body); code != http.StatusForbidden || !strings.Contains(body, "tls-required") {
			t.Errorf("%s %s over plain HTTP from another machine: %d %s", tc.method, tc.path, code, body)
		}
		if code, body := call("[2001:db8::1]:40000", false, tc.method, tc.path, tc.body); code != http.StatusForbidden {
			t.Errorf("%s %s over plain HTTP from IPv6: %d %s", tc.method, tc.path, code, body)
		}
	}
	if code, body := call("192.0.2.10:40000", true, "GET", "/v1/keys", ""); code != http.StatusOK {
		t.Errorf("over TLS from another machine: %d %s", code, body)
	}
	if code, body := call("127.0.0.1:40000", false, "GET", "/v1/keys", ""); code != http.StatusOK {
		t.Errorf("plain HTTP from this machine: %d %s", code, body)
	}
	// Devices do not carry officers' secrets: their endpoints are not
	// affected.
	if code, body := call("192.0.2.10:40000", false, "POST", "/v1/request-id", ""); code == http.StatusForbidden && strings.Contains(body, "tls-required") {
		t.Errorf("a device endpoint asked for TLS: %s", body)
	}
}

// TestFreezeIsOneOfficer: one officer stops a key or a client at once;
// bringing the key back takes the quorum.
func TestFreezeIsOneOfficer(t *testing.T) {
	e := newDeviceEnv(t, false)
	key := e.key(mustModelKey(t, e, "line-1")).Name
	model := e.modelAssertion("line-1")
	if a := e.do("carol", "POST", "/v1/keys/"+key+"/freeze", nil); a.Status != http.StatusOK || a.Body["state"] != "disabled" {
		t.Fatalf("freeze: %d %s", a.Status, a.Raw)
	}
	code, _, raw := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(newDevice(t).serialRequest(t, e.requestID("line-a"), "line-1", "F-1", nil), model), nil)
	if code != http.StatusForbidden || errCodeOf(raw) != "key-not-active" {
		t.Fatalf("serial with the key frozen: %d %s", code, raw)
	}
	// One officer cannot thaw it.
	a := e.propose("carol", "POST", "/v1/keys/"+key+"/enable", nil)
	if a.Status != http.StatusAccepted {
		t.Fatalf("enable by one officer: %d %s", a.Status, a.Raw)
	}
	if e.key(key).State != store.KeyDisabled {
		t.Fatal("one officer's approval enabled the key")
	}
	if b := e.approve("alice", a.proposalID()); b.Status != http.StatusOK || e.key(key).State != store.KeyActive {
		t.Fatalf("enable by the quorum: %d %s", b.Status, b.Raw)
	}
	if a := e.do("bob", "POST", "/v1/clients/line-b/revoke", nil); a.Status != http.StatusOK || a.Body["revoked-at"] == nil {
		t.Fatalf("revoke: %d %s", a.Status, a.Raw)
	}
	if code, _, _ := e.call("line-b", "POST", "/v1/request-id", "", nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("a revoked client: %d", code)
	}
	if !strings.Contains(strings.Join(e.auditActions(), "\n"), "officer:carol key.freeze ok") {
		t.Fatal("the freeze is not audited")
	}
}

func mustModelKey(t *testing.T, e *deviceEnv, model string) string {
	t.Helper()
	var mc store.ModelConfig
	if err := e.db.View(context.Background(), func(tx *store.Tx) (err error) { mc, err = tx.GetModel("brand-x", model); return err }); err != nil {
		t.Fatal(err)
	}
	return mc.Keys["serial"]
}

// TestQuorumIsACeremony: the quorum changes only through a proposal the
// current quorum approves, never to more than the active officers, and
// then applies to every proposal.
func TestQuorumIsACeremony(t *testing.T) {
	e := newCeremonyEnv(t, 2, "1h")
	if a := e.do("alice", "POST", "/v1/quorum", map[string]any{"quorum": 4}); a.Status != http.StatusConflict || a.errCode() != "quorum-unreachable" {
		t.Fatalf("quorum 4 of 3 officers: %d %s", a.Status, a.Raw)
	}
	a := e.propose("alice", "POST", "/v1/quorum", map[string]any{"quorum": 3})
	if a.Status != http.StatusAccepted {
		t.Fatalf("proposing quorum 3: %d %s", a.Status, a.Raw)
	}
	if b := e.approve("bob", a.proposalID()); b.Status != http.StatusOK || b.Body["executed"] != true {
		t.Fatalf("quorum 3 approved by 2: %d %s", b.Status, b.Raw)
	}
	if o := e.do("carol", "GET", "/v1/officers", nil); o.Body["quorum"] != float64(3) {
		t.Fatalf("officers list after the change: %s", o.Raw)
	}
	// Two approvals no longer do.
	id := e.propose("alice", "POST", "/v1/keys/generate", map[string]any{"name": "three", "roles": serialRoles}).proposalID()
	if b := e.approve("bob", id); b.Status != http.StatusAccepted {
		t.Fatalf("second of three approvals: %d %s", b.Status, b.Raw)
	}
	if b := e.approve("carol", id); b.Status != http.StatusOK || b.Body["executed"] != true {
		t.Fatalf("third approval: %d %s", b.Status, b.Raw)
	}
	// With three officers and a quorum of three, nobody can be removed.
	if a := e.do("alice", "DELETE", "/v1/officers/carol", nil); a.Status != http.StatusConflict || a.errCode() != "quorum-unreachable" {
		t.Fatalf("removing below the quorum: %d %s", a.Status, a.Raw)
	}
}

// TestAuditVerifiesApprovals: every approval the chain records verifies
// offline against the officers' keys as the chain recorded them, and the
// approvals on record in the store must be those: one row edited (its
// signature, or the officer it names) is found.
func TestAuditVerifiesApprovals(t *testing.T) {
	e := newCeremonyEnv(t, 2, "1h")
	e.addOfficer("dave")
	id := e.propose("alice", "POST", "/v1/keys/generate", map[string]any{"name": "audited", "roles": serialRoles}).proposalID()
	if b := e.approve("dave", id); b.Status != http.StatusOK {
		t.Fatalf("approve: %d %s", b.Status, b.Raw)
	}
	pending := e.propose("bob", "POST", "/v1/keys/generate", map[string]any{"name": "waiting", "roles": serialRoles}).proposalID()
	verify := func() error {
		t.Helper()
		var evs []store.AuditEvent
		var props []store.Proposal
		e.db.View(context.Background(), func(tx *store.Tx) error {
			evs, _ = tx.AuditEvents(0, 100000)
			props, _ = tx.ListProposals("", 1000)
			return nil
		})
		v := auditverify.New()
		if err := v.Check(evs); err != nil {
			return err
		}
		if v.Verified < 5 {
			t.Fatalf("only %d approvals verified", v.Verified)
		}
		for _, p := range props {
			full, _ := e.proposalRecord(p.ID)
			if err := v.CheckRecord(full); err != nil {
				return err
			}
		}
		return nil
	}
	if err := verify(); err != nil {
		t.Fatalf("untouched store: %v", err)
	}
	db := e.sqlHandle()
	// Another signature (bob's genuine one over another proposal) put in
	// place of bob's on the pending proposal.
	var other, bobs []byte
	db.QueryRow(`SELECT signature FROM approvals WHERE proposal_id = ? AND officer = 'alice'`, id).Scan(&other)
	db.QueryRow(`SELECT signature FROM approvals WHERE proposal_id = ? AND officer = 'bob'`, pending).Scan(&bobs)
	if _, err := db.Exec(`UPDATE approvals SET signature = ? WHERE proposal_id = ? AND officer = 'bob'`, other, pending); err != nil {
		t.Fatal(err)
	}
	if err := verify(); err == nil || !strings.Contains(err.Error(), "bob") {
		t.Fatalf("an edited approval row: %v", err)
	}
	if _, err := db.Exec(`UPDATE approvals SET signature = ? WHERE proposal_id = ? AND officer = 'bob'`, bobs, pending); err != nil {
		t.Fatal(err)
	}
	if err := verify(); err != nil {
		t.Fatalf("the row put back: %v", err)
	}
	// Re-attributed to carol.
	if _, err := db.Exec(`UPDATE approvals SET officer = 'carol' WHERE proposal_id = ? AND officer = 'dave'`, id); err != nil {
		t.Fatal(err)
	}
	if err := verify(); err == nil {
		t.Fatal("an approval row moved to another officer verified")
	}
}

func (e *ceremonyEnv) proposalRecord(id string) (store.Proposal, error) {
	var p store.Proposal
	err := e.db.View(context.Background(), func(tx *store.Tx) (err error) { p, err = tx.GetProposal(id); return err })
	return p, err
}

// TestOfficerRefusalsAudited: what the officer side refuses is in the
// audit chain with who, what and why, including refusals made before a
// proposal exists (a key the upload cannot read, a malformed officer key).
func TestOfficerRefusalsAudited(t *testing.T) {
	e := newCeremonyEnv(t, 2, "1h")
	for _, tc := range []struct {
		method, path string
		body         any
		want         string
	}{
		{"POST", "/v1/keys/upload", map[string]any{"name": "bad", "roles": serialRoles, "key": []byte("not a key")}, "officer:alice proposal.create refused: "},
		{"POST", "/v1/officers", map[string]any{"name": "eve", "public-key": "ssh-ed25519 garbage"}, "officer:alice proposal.create refused: "},
		{"POST", "/v1/keys/nope/freeze", nil, "officer:alice key.freeze refused: "},
		{"POST", "/v1/proposals/nope/cancel", nil, "officer:alice proposal.cancel refused: "},
	} {
		before := len(e.auditActions())
		if a := e.do("alice", tc.method, tc.path, tc.body); a.Status/100 != 4 {
			t.Fatalf("%s %s: %d %s", tc.method, tc.path, a.Status, a.Raw)
		}
		after := e.auditActions()
		if len(after) != before+1 || !strings.HasPrefix(after[len(after)-1], tc.want) {
			t.Errorf("%s %s: audit %v, want one %q", tc.method, tc.path, after[before:], tc.want)
		}
	}
}

// TestImportBindsTheKey: an import names the wrapped key's id; a blob
// holding another key is refused at execution, and nothing stays in the
// token.
func TestImportBindsTheKey(t *testing.T) {
	e := newCeremonyEnv(t, 2, "1h")
	imp := e.do("alice", "GET", "/v1/import-key", nil)
	block, _ := pem.Decode([]byte(imp.Body["public_key_pem"].(string)))
	pubAny, _ := x509.ParsePKIXPublicKey(block.Bytes)
	// The key the proposal names is not the one in the blob (only its id
	// matters, so a quick 2048-bit one does).
	brand := outsideBrandKey(t)
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(brand)
	blob, err := keywrap.Wrap(pubAny.(*rsa.PublicKey), der)
	if err != nil {
		t.Fatal(err)
	}
	otherID := asserts.RSAPublicKey(&other.PublicKey).ID()
	keysBefore := countTokenKeys(t)
	a := e.propose("alice", "POST", "/v1/keys/import", map[string]any{"name": "swapped", "roles": serialRoles, "blob": blob, "sign-key-sha3-384": otherID})
	content := a.Body["proposal"].(map[string]any)["content"].(string)
	sum := sha256.Sum256(blob)
	if !strings.Contains(content, hex.EncodeToString(sum[:])) || !strings.Contains(content, otherID) {
		t.Fatalf("the content does not name the blob's sha256 and the key id: %s", content)
	}
	b := e.approve("bob", a.proposalID())
	if b.Status != http.StatusBadRequest || b.errCode() != "wrong-key" {
		t.Fatalf("a blob with another key: %d %s", b.Status, b.Raw)
	}
	if n := countTokenKeys(t); n != keysBefore {
		t.Fatalf("token keys %d -> %d: the refused key stayed", keysBefore, n)
	}
	// Without the key id, the import is refused before any approval.
	if a := e.do("alice", "POST", "/v1/keys/import", map[string]any{"name": "unnamed", "roles": serialRoles, "blob": blob}); a.Status != http.StatusBadRequest {
		t.Fatalf("an import without its key id: %d %s", a.Status, a.Raw)
	}
}
