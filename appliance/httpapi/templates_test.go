package httpapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance/store"
)

// templateHeaders is a core22 model statement for brand-x/model, as an
// officer writes it for snap sign.
func templateHeaders(model string) map[string]any {
	return map[string]any{
		"type": "model", "authority-id": "brand-x", "brand-id": "brand-x", "series": "16", "model": model,
		"architecture": "amd64", "base": "core22", "grade": "signed", "timestamp": "2026-01-01T00:00:00Z",
		"snaps": []any{
			map[string]any{"name": "pc", "id": "UqFziVZDHLSyO3TqSWgNBoAdHbLI4dAH", "type": "gadget", "default-channel": "22/stable"},
			map[string]any{"name": "pc-kernel", "id": "pYVQrBcKmBa0mZ4CCN7ExT6jH8rY1hza", "type": "kernel", "default-channel": "22/stable"},
			map[string]any{"name": "core22", "id": "amcUKQILKXHHTlmSa7NMdnXSx02dNeeT", "type": "base", "default-channel": "latest/stable"},
		},
	}
}

func statementOf(t *testing.T, h map[string]any) string {
	t.Helper()
	b, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// ensureTemplate has the officers approve the model template of
// brand-x/model (templateHeaders), unless it has one.
func (e *deviceEnv) ensureTemplate(model string) {
	e.t.Helper()
	l := e.do("alice", "GET", "/v1/models/templates", nil)
	if l.Status != http.StatusOK {
		e.t.Fatalf("templates: %d %s", l.Status, l.Raw)
	}
	ts, _ := l.Body["templates"].([]any)
	for _, tpl := range ts {
		if m, _ := tpl.(map[string]any); m["model"] == model {
			return
		}
	}
	e.quorum("alice", "POST", "/v1/models/templates", map[string]any{"brand": "brand-x", "model": model,
		"statement": statementOf(e.t, templateHeaders(model))})
}

// signTemplate asks for brand-x/model's template as the signing client sign-a.
func (e *deviceEnv) signTemplate(model string) (int, []byte) {
	e.t.Helper()
	b, _ := json.Marshal(map[string]any{"brand-id": "brand-x", "model": model})
	code, _, raw := e.call("sign-a", "POST", "/v1/model", "application/json", b, nil)
	return code, raw
}

// checkedModel decodes a model assertion and checks its signature with the
// token key's public key, as snapd would.
func checkedModel(t *testing.T, pub *rsa.PublicKey, raw []byte) *asserts.Model {
	t.Helper()
	a, err := asserts.Decode(raw)
	if err != nil {
		t.Fatalf("decode: %v\n%s", err, raw)
	}
	if err := asserts.SignatureCheck(a, asserts.RSAPublicKey(pub)); err != nil {
		t.Fatalf("signature: %v", err)
	}
	m, ok := a.(*asserts.Model)
	if !ok {
		t.Fatalf("a %s assertion, not a model", a.Type().Name)
	}
	return m
}

func (e *deviceEnv) modelLogRows() int {
	e.t.Helper()
	var n int
	if err := e.db.View(context.Background(), func(tx *store.Tx) error {
		rows, err := tx.SigningLog(store.LogFilter{Type: "model"})
		n = len(rows)
		return err
	}); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// TestModelHeadersOfTheClientRefused plays the factory client (or anyone
// with its key) asking for a model assertion of its own making: dangerous
// grade, any system-user authority, a foreign serial authority, another
// store and extra snaps. It is refused whatever it names, and nothing is
// signed.
func TestModelHeadersOfTheClientRefused(t *testing.T) {
	e := newDeviceEnv(t, false)
	e.ensureTemplate("line-1")
	evil := map[string]any{"model": "line-1", "architecture": "amd64", "base": "core22", "grade": "dangerous",
		"system-user-authority": "*", "serial-authority": []any{"attacker"}, "store": "attacker-store",
		"timestamp": "2026-01-01T00:00:00Z",
		"snaps": []any{
			map[string]any{"name": "pc", "type": "gadget", "default-channel": "22/stable"},
			map[string]any{"name": "pc-kernel", "type": "kernel", "default-channel": "22/stable"},
			map[string]any{"name": "core22", "type": "base", "default-channel": "latest/stable"},
			map[string]any{"name": "backdoor", "type": "app", "default-channel": "latest/edge"},
		}}
	before := e.modelLogRows()
	for name, req := range map[string]map[string]any{
		"headers only":            {"headers": evil},
		"headers and a template":  {"brand-id": "brand-x", "model": "line-1", "headers": evil},
		"a body with a template":  {"model": "line-1", "body": "anything"},
		"headers, no such model":  {"headers": map[string]any{"model": "line-9", "grade": "dangerous"}},
		"headers with authority*": {"headers": map[string]any{"model": "line-1", "system-user-authority": "*"}},
	} {
		b, _ := json.Marshal(req)
		code, _, raw := e.call("sign-a", "POST", "/v1/model", "application/json", b, nil)
		var eb struct{ Code, Message string }
		json.Unmarshal(raw, &eb)
		if code != http.StatusForbidden || eb.Code != "template-only" || !strings.Contains(eb.Message, "templates officers approved") {
			t.Errorf("%s: %d %s (want 403 template-only with a message)", name, code, raw)
		}
		if bytes.Contains(raw, []byte("type: model")) {
			t.Errorf("%s: an assertion came back", name)
		}
	}
	// A model with no template gets nothing either.
	if code, raw := e.signTemplate("line-9"); code != http.StatusNotFound || errCodeOf(raw) != "no-model-template" {
		t.Errorf("model without a template: %d %s", code, raw)
	}
	if n := e.modelLogRows(); n != before {
		t.Fatalf("%d model signatures logged for refused requests", n-before)
	}
}

// TestTemplateSignedExactly: a template's signature carries exactly the
// approved headers, with only timestamp and revision set by the
// appliance, the revision growing from one signature to the next, also
// after a restart on the same store, and never below the revision a
// (replacing) template names.
func TestTemplateSignedExactly(t *testing.T) {
	e := newDeviceEnv(t, false)
	e.ensureTemplate("line-1")
	want := templateHeaders("line-1")
	check := func(raw []byte, rev int) {
		t.Helper()
		m := checkedModel(t, e.brand, raw)
		got := m.Headers()
		if got["revision"] != nil && rev == 0 || rev > 0 && got["revision"] != itoa(rev) {
			t.Fatalf("revision %v, want %d", got["revision"], rev)
		}
		ts, err := time.Parse(time.RFC3339, got["timestamp"].(string))
		if err != nil || time.Since(ts) > time.Minute || time.Until(ts) > time.Minute {
			t.Fatalf("timestamp %v is not the time of signing", got["timestamp"])
		}
		for _, h := range []string{"revision", "timestamp", "sign-key-sha3-384"} {
			delete(got, h)
		}
		w := map[string]any{}
		for k, v := range want {
			w[k] = v
		}
		delete(w, "timestamp")
		if !reflect.DeepEqual(got, w) {
			t.Fatalf("headers signed:\n%v\nwant the template's:\n%v", got, w)
		}
	}
	code, raw := e.signTemplate("line-1")
	if code != 200 {
		t.Fatalf("first signature: %d %s", code, raw)
	}
	check(raw, 1)
	code, raw = e.signTemplate("line-1")
	if code != 200 {
		t.Fatalf("second signature: %d %s", code, raw)
	}
	check(raw, 2)

	// A restart: another appliance process on the same store file.
	ctx := context.Background()
	db2, err := store.OpenSQLite(ctx, e.srv.cfg.Store.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db2.Close() })
	srv2, err := newServer(ctx, e.srv.cfg, db2, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ts2 := httptest.NewServer(srv2.Handler())
	t.Cleanup(ts2.Close)
	e.ts.Close()
	e.ts = ts2
	code, raw = e.signTemplate("line-1")
	if code != 200 {
		t.Fatalf("signature after the restart: %d %s", code, raw)
	}
	check(raw, 3)

	// A replacing template (another ceremony) that names revision 20
	// starts there; the counter goes on from it.
	for _, name := range []string{"alice", "bob", "carol"} {
		e.creds[name] = e.login(name, e.keys[name])
	}
	want = templateHeaders("line-1")
	want["revision"] = "20"
	want["display-name"] = "Line 1, second edition"
	e.quorum("alice", "POST", "/v1/models/templates", map[string]any{"brand": "brand-x", "model": "line-1", "statement": statementOf(t, want)})
	delete(want, "revision")
	code, raw = e.signTemplate("line-1")
	if code != 200 {
		t.Fatalf("signature of the new template: %d %s", code, raw)
	}
	check(raw, 20)
	code, raw = e.signTemplate("line-1")
	if code != 200 {
		t.Fatalf("second signature of the new template: %d %s", code, raw)
	}
	check(raw, 21)
	// Every signature is in the signing log with its revision.
	var revs []int
	db2.View(ctx, func(tx *store.Tx) error {
		rows, err := tx.SigningLog(store.LogFilter{Type: "model", Model: "line-1"})
		for _, r := range rows {
			revs = append(revs, r.Revision)
		}
		return err
	})
	if !reflect.DeepEqual(revs, []int{1, 2, 3, 20, 21}) {
		t.Fatalf("signing log revisions %v", revs)
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestTemplateBelowQuorumNotUsable: one officer's approval under quorum 2
// makes no template.
func TestTemplateBelowQuorumNotUsable(t *testing.T) {
	e := newDeviceEnv(t, false)
	a := e.propose("alice", "POST", "/v1/models/templates", map[string]any{"brand": "brand-x", "model": "line-1",
		"statement": statementOf(t, templateHeaders("line-1"))})
	if a.Status != http.StatusAccepted {
		t.Fatalf("proposal: %d %s", a.Status, a.Raw)
	}
	if code, raw := e.signTemplate("line-1"); code != http.StatusNotFound || errCodeOf(raw) != "no-model-template" {
		t.Fatalf("a template with one approval of two was used: %d %s", code, raw)
	}
	if l := e.do("alice", "GET", "/v1/models/templates", nil); strings.Contains(l.Raw, "line-1") {
		t.Fatalf("a pending template is listed: %s", l.Raw)
	}
}

// TestTemplateRefusedAtProposal: templates that are not the brand's, not
// for the model, not something snapd accepts, or outside the roles of the
// key bound to the model, are refused before officers approve them.
func TestTemplateRefusedAtProposal(t *testing.T) {
	e := newDeviceEnv(t, false)
	mutate := func(f func(h map[string]any)) string {
		h := templateHeaders("line-1")
		f(h)
		return statementOf(t, h)
	}
	for name, tc := range map[string]struct {
		model, statement, code string
	}{
		"other authority":  {"line-1", mutate(func(h map[string]any) { h["authority-id"] = "other" }), "template-brand"},
		"other model":      {"line-1", mutate(func(h map[string]any) { h["model"] = "line-9" }), "template-model"},
		"not a model":      {"line-1", mutate(func(h map[string]any) { h["type"] = "serial" }), "invalid-statement"},
		"snapd refuses":    {"line-1", mutate(func(h map[string]any) { h["grade"] = "lax" }), "invalid-statement"},
		"a number":         {"line-1", `{"type": "model", "revision": 3}`, "invalid-statement"},
		"repeated header":  {"line-1", `{"type": "model", "model": "line-1", "model": "line-9"}`, "invalid-statement"},
		"sign key set":     {"line-1", mutate(func(h map[string]any) { h["sign-key-sha3-384"] = "x" }), "invalid-statement"},
		"model not set up": {"line-2", mutate(func(h map[string]any) { h["model"] = "line-2" }), "model-not-set-up"},
	} {
		a := e.do("alice", "POST", "/v1/models/templates", map[string]any{"brand": "brand-x", "model": tc.model, "statement": tc.statement})
		if a.Status/100 != 4 || errCodeOf([]byte(a.Raw)) != tc.code {
			t.Errorf("%s: %d %s (want %s)", name, a.Status, a.Raw, tc.code)
		}
	}
}

// TestTemplateEditedInStoreRefused plays a store administrator who
// rewrites an approved template: the row alone, then the row and the
// proposal's payload together. Signing checks the row against the
// proposal officers approved and its content against their signatures'
// content, and refuses both; the refusal is audited.
func TestTemplateEditedInStoreRefused(t *testing.T) {
	e := newDeviceEnv(t, false)
	e.ensureTemplate("line-1")
	ctx := context.Background()
	if code, raw := e.signTemplate("line-1"); code != 200 {
		t.Fatalf("template: %d %s", code, raw)
	}
	var tpl store.ModelTemplate
	if err := e.db.View(ctx, func(tx *store.Tx) (err error) { tpl, err = tx.GetModelTemplate("brand-x", "line-1"); return err }); err != nil {
		t.Fatal(err)
	}
	evil := templateHeaders("line-1")
	evil["grade"] = "dangerous"
	evil["system-user-authority"] = "*"
	evilJSON, _ := json.Marshal(evil)
	raw, err := sql.Open(store.SQLiteDriver, e.srv.cfg.Store.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// One connection, so that the busy timeout set here (in a syntax
	// every driver takes) is the one every statement runs with.
	raw.SetMaxOpenConns(1)
	if _, err := raw.Exec(`PRAGMA busy_timeout = 5000`); err != nil {
		t.Fatal(err)
	}
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := raw.Exec(q, args...); err != nil {
			t.Fatal(err)
		}
	}
	refusedNow := func(what string) {
		t.Helper()
		before := e.modelLogRows()
		code, body := e.signTemplate("line-1")
		if code != http.StatusConflict || errCodeOf(body) != "template-changed" || bytes.Contains(body, []byte("type: model")) {
			t.Fatalf("%s: %d %s (want 409 template-changed)", what, code, body)
		}
		if n := e.modelLogRows(); n != before {
			t.Fatalf("%s: signed anyway", what)
		}
		var evs []store.AuditEvent
		e.db.View(ctx, func(tx *store.Tx) error { evs, err = tx.AuditEvents(0, 100000); return err })
		if last := evs[len(evs)-1]; last.Action != "model.sign" || !strings.HasPrefix(last.Result, "refused: ") {
			t.Fatalf("%s: last audit event %+v", what, last)
		}
	}
	// 1. The row.
	exec(`UPDATE model_templates SET headers = $1 WHERE brand = 'brand-x' AND model = 'line-1'`, string(evilJSON))
	refusedNow("row edited")
	// 2. The row and the payload, consistently.
	var payload string
	if err := raw.QueryRow(`SELECT payload FROM proposals WHERE id = $1`, tpl.ProposalID).Scan(&payload); err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	json.Unmarshal([]byte(payload), &p)
	p["statement"], p["headers"] = statementOf(t, evil), evil
	newPayload, _ := json.Marshal(p)
	exec(`UPDATE proposals SET payload = $1 WHERE id = $2`, string(newPayload), tpl.ProposalID)
	refusedNow("row and proposal payload edited")
	// 3. Put back, it signs again.
	exec(`UPDATE proposals SET payload = $1 WHERE id = $2`, payload, tpl.ProposalID)
	exec(`UPDATE model_templates SET headers = $1 WHERE brand = 'brand-x' AND model = 'line-1'`, tpl.Headers)
	if code, body := e.signTemplate("line-1"); code != 200 {
		t.Fatalf("restored template: %d %s", code, body)
	}
}

// TestAdhocSignOutsideRolesRefused: `keyrack sign` with an assertion the
// key's roles do not allow (another model, a type no role names) is
// refused when proposed, with the rule named; nothing is proposed.
func TestAdhocSignOutsideRolesRefused(t *testing.T) {
	e := newDeviceEnv(t, false)
	key := e.modelKey()
	other := templateHeaders("other-1")
	account := map[string]any{"type": "account", "authority-id": "brand-x", "account-id": "someone", "display-name": "Someone",
		"validation": "verified", "timestamp": "2026-01-01T00:00:00Z"}
	for name, tc := range map[string]struct {
		h    map[string]any
		code string
	}{
		"model outside the roles": {other, "key-model"},
		"type outside the roles":  {account, "key-type"},
	} {
		a := e.do("alice", "POST", "/v1/sign", map[string]any{"key": key, "statement": statementOf(t, tc.h)})
		var eb struct{ Code, Message string }
		json.Unmarshal([]byte(a.Raw), &eb)
		if a.Status != http.StatusForbidden || eb.Code != tc.code || !strings.Contains(eb.Message, tc.code+":") || !strings.Contains(eb.Message, key) {
			t.Errorf("%s: %d %s (want 403 %s naming the rule and key)", name, a.Status, a.Raw, tc.code)
		}
	}
	if l := e.do("alice", "GET", "/v1/proposals?state=pending", nil); strings.Contains(l.Raw, "assertion.sign") {
		t.Fatalf("a refused signature was proposed: %s", l.Raw)
	}
}

func (e *deviceEnv) modelKey() string {
	e.t.Helper()
	var mc store.ModelConfig
	if err := e.db.View(context.Background(), func(tx *store.Tx) (err error) { mc, err = tx.GetModel("brand-x", "line-1"); return err }); err != nil {
		e.t.Fatal(err)
	}
	return mc.Keys["model"]
}

// TestAdhocSignApproved: an approved `keyrack sign` yields an assertion
// whose content is byte for byte what snapd's own signing makes of the
// statement (with the token key's id), verified by snapd; before the
// quorum there is nothing to fetch; the signature is logged and audited.
func TestAdhocSignApproved(t *testing.T) {
	e := newDeviceEnv(t, false)
	key := e.modelKey()
	h := templateHeaders("line-5")
	h["revision"] = "4"
	h["body"] = "a body, signed as given\n"
	statement := statementOf(t, h)
	a := e.propose("alice", "POST", "/v1/sign", map[string]any{"key": key, "statement": statement})
	if a.Status != http.StatusAccepted {
		t.Fatalf("proposal: %d %s", a.Status, a.Raw)
	}
	id := a.proposalID()
	if p := e.do("alice", "GET", "/v1/proposals/"+id, nil); !strings.Contains(p.Body["content"].(string), `"statement":`) {
		t.Fatalf("the content officers sign does not hold the statement: %s", p.Body["content"])
	}
	if b := e.do("alice", "GET", "/v1/proposals/"+id+"/assertion", nil); b.Status != http.StatusConflict || errCodeOf([]byte(b.Raw)) != "not-signed" {
		t.Fatalf("assertion before the quorum: %d %s", b.Status, b.Raw)
	}
	if b := e.approve("bob", id); b.Status != http.StatusOK || b.Body["executed"] != true {
		t.Fatalf("approval: %d %s", b.Status, b.Raw)
	}
	req, _ := http.NewRequest("GET", e.ts.URL+"/v1/proposals/"+id+"/assertion", nil)
	req.Header.Set("Authorization", "Bearer "+e.creds["carol"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != asserts.MediaType {
		t.Fatalf("fetch: %d %s", resp.StatusCode, raw)
	}
	m := checkedModel(t, e.brand, raw)
	content, _ := m.Signature()

	// What snapd's signing (signtool's path: the statement's headers,
	// body from the pseudo-header) makes with a key of its own, with that
	// key's id replaced by the token key's.
	var sh map[string]any
	json.Unmarshal([]byte(statement), &sh)
	body := []byte(sh["body"].(string))
	delete(sh, "body")
	typ := asserts.Type(sh["type"].(string))
	throwaway, _ := rsa.GenerateKey(rand.Reader, 2048)
	tk := asserts.RSAPrivateKey(throwaway)
	db, err := asserts.OpenDatabase(&asserts.DatabaseConfig{KeypairManager: asserts.NewMemoryKeypairManager()})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.ImportKey(tk); err != nil {
		t.Fatal(err)
	}
	ref, err := db.Sign(typ, sh, body, tk.PublicKey().ID())
	if err != nil {
		t.Fatal(err)
	}
	refContent, _ := ref.Signature()
	wantContent := bytes.Replace(refContent, []byte("sign-key-sha3-384: "+tk.PublicKey().ID()),
		[]byte("sign-key-sha3-384: "+asserts.RSAPublicKey(e.brand).ID()), 1)
	if !bytes.Equal(content, wantContent) {
		t.Fatalf("signed content:\n%s\nsnapd's for the statement:\n%s", content, wantContent)
	}
	if m.Revision() != 4 || string(m.Body()) != "a body, signed as given\n" {
		t.Fatalf("revision %d body %q", m.Revision(), m.Body())
	}
	// Logged and audited.
	var rows []store.LogEntry
	e.db.View(context.Background(), func(tx *store.Tx) (err error) {
		rows, err = tx.SigningLog(store.LogFilter{Client: "proposal:" + id})
		return err
	})
	if len(rows) != 1 || rows[0].Type != "model" || rows[0].Model != "line-5" || rows[0].Revision != 4 || rows[0].Brand != "brand-x" {
		t.Fatalf("signing log: %+v", rows)
	}
	var evs []store.AuditEvent
	e.db.View(context.Background(), func(tx *store.Tx) (err error) { evs, err = tx.AuditEvents(0, 100000); return err })
	found := false
	for _, ev := range evs {
		if ev.Action == "assertion.sign" && ev.Result == "ok" && strings.Contains(ev.Details, rows[0].Digest) {
			found = true
		}
	}
	if !found {
		t.Fatal("no audit event for the ad-hoc signature")
	}
	// An approved signature is made once: the fetch gives the same bytes.
	again := e.do("alice", "GET", "/v1/proposals/"+id, nil)
	if again.Body["state"] != "executed" {
		t.Fatalf("proposal after signing: %s", again.Raw)
	}
}
