package httpapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
)

// deviceEnv is an appliance with a brand key bound to brand-x/line-1
// (serials from the request) and brand-x/line-9 (serials assigned), and
// three clients: the device-service clients "line-a" for line-1 and
// line-9 and "line-b" for line-2, and the signing client "sign-a" for
// line-1 and line-9.
type deviceEnv struct {
	*ceremonyEnv
	apiKeys map[string]string
	brand   *rsa.PublicKey
}

func (e *ceremonyEnv) quorum(officer, method, path string, body any) answer {
	e.t.Helper()
	a := e.propose(officer, method, path, body)
	if a.Status != http.StatusAccepted {
		e.t.Fatalf("%s %s: %d %s", method, path, a.Status, a.Raw)
	}
	other := "bob"
	if officer == "bob" {
		other = "carol"
	}
	b := e.approve(other, a.proposalID())
	if b.Status != http.StatusOK {
		e.t.Fatalf("approving %s %s: %d %s", method, path, b.Status, b.Raw)
	}
	return b
}

func newDeviceEnv(t *testing.T, rekey bool, opts ...func(*appliance.Config)) *deviceEnv {
	e := &deviceEnv{ceremonyEnv: newCeremonyEnv(t, 2, "1h", opts...), apiKeys: map[string]string{}}
	roles := []map[string]any{{"type": "serial", "models": []string{"line-.*"}}, {"type": "model", "models": []string{"line-.*"}},
		{"type": "system-user", "models": []string{"line-.*"}}, {"type": "preseed", "models": []string{"line-.*"}}}
	name := "brand-" + strings.ToLower(randomHex(4))
	e.quorum("alice", "POST", "/v1/keys/generate", map[string]any{"name": name, "roles": roles})
	pubAny, _ := x509.ParsePKIXPublicKey(e.key(name).PublicKey)
	e.brand = pubAny.(*rsa.PublicKey)
	all := map[string]string{"serial": name, "model": name, "system-user": name, "preseed": name}
	e.quorum("alice", "POST", "/v1/models", map[string]any{"brand": "brand-x", "model": "line-1", "keys": all, "allow-rekey": rekey})
	e.quorum("alice", "POST", "/v1/models", map[string]any{"brand": "brand-x", "model": "line-9", "keys": all, "serial-source": "assign", "serial-prefix": "L9-"})
	for client, models := range map[string][]string{"line-a": {"line-1", "line-9"}, "line-b": {"line-2"}} {
		b := e.quorum("alice", "POST", "/v1/clients", map[string]any{"name": client, "kind": "device-service", "brand": "brand-x", "models": models})
		e.apiKeys[client] = b.Body["credential"].(string)
	}
	// The signing client of the tests that ask for models, system-users
	// and preseeds: the default limits, and passwords allowed.
	e.createClient("sign-a", map[string]any{"kind": "signing", "brand": "brand-x", "models": []string{"line-1", "line-9"},
		"types": []string{"model", "system-user", "preseed"}, "limits": map[string]any{"password": true}})
	return e
}

// createClient creates API client name through the ceremony and keeps its
// key in e.apiKeys.
func (e *deviceEnv) createClient(name string, req map[string]any) {
	e.t.Helper()
	req["name"] = name
	b := e.quorum("alice", "POST", "/v1/clients", req)
	e.apiKeys[name] = b.Body["credential"].(string)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

func (e *deviceEnv) call(client, method, path, ctype string, body []byte, hdr map[string]string) (int, http.Header, []byte) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.ts.URL+path, bytes.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if client != "" {
		req.Header.Set("api-key", e.apiKeys[client])
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, raw
}

// serve runs the server's own Serve (its HTTP limits and timeouts, which
// the test server of newDeviceEnv lacks) on a loopback listener and
// returns its address and a stop that shuts it down and checks Serve
// ended cleanly.
func (e *deviceEnv) serve() (addr string, stop func()) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(ctx, ln) }()
	return ln.Addr().String(), func() {
		e.t.Helper()
		cancel()
		if err := <-done; err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *deviceEnv) requestID(client string) string {
	e.t.Helper()
	code, _, raw := e.call(client, "POST", "/v1/request-id", "", nil, nil)
	var v map[string]string
	if code != 200 || json.Unmarshal(raw, &v) != nil || v["request-id"] == "" {
		e.t.Fatalf("request-id: %d %s", code, raw)
	}
	return v["request-id"]
}

// modelAssertion has the appliance sign the model (as the brand would).
func (e *deviceEnv) modelAssertion(model string) []byte {
	e.t.Helper()
	e.ensureTemplate(model)
	b, _ := json.Marshal(map[string]any{"model": model})
	code, _, raw := e.call("sign-a", "POST", "/v1/model", "application/json", b, nil)
	if code != 200 {
		e.t.Fatalf("model: %d %s", code, raw)
	}
	return raw
}

type device struct {
	priv *rsa.PrivateKey
}

func newDevice(t *testing.T) *device {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &device{priv: k}
}

// serialRequest is what snapd's device manager sends.
func (d *device) serialRequest(t *testing.T, requestID, model, serial string, extra map[string]any) []byte {
	t.Helper()
	enc, _ := asserts.EncodePublicKey(asserts.RSAPrivateKey(d.priv).PublicKey())
	h := map[string]any{"brand-id": "brand-x", "model": model, "request-id": requestID, "device-key": string(enc)}
	if serial != "" {
		h["serial"] = serial
	}
	for k, v := range extra {
		h[k] = v
	}
	a, err := asserts.SignWithoutAuthority(asserts.SerialRequestType, h, []byte("HW: test rig"), asserts.RSAPrivateKey(d.priv))
	if err != nil {
		t.Fatal(err)
	}
	return asserts.Encode(a)
}

func stream(parts ...[]byte) []byte {
	var b bytes.Buffer
	for _, p := range parts {
		b.Write(bytes.TrimRight(p, "\n"))
		b.WriteString("\n\n")
	}
	return b.Bytes()
}

var (
	rootOnce sync.Once
	rootKey  asserts.PrivateKey
)

// trustingDB trusts only a test root, which vouches for the brand account
// and its account-key: what a device's assertion database holds.
func trustingDB(t *testing.T, brandPub *rsa.PublicKey) *asserts.Database {
	t.Helper()
	rootOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		rootKey = asserts.RSAPrivateKey(k)
	})
	sdb, _ := asserts.OpenDatabase(&asserts.DatabaseConfig{Backstore: asserts.NewMemoryBackstore(), KeypairManager: asserts.NewMemoryKeypairManager()})
	sdb.ImportKey(rootKey)
	sign := func(typ *asserts.AssertionType, h map[string]any, body []byte) asserts.Assertion {
		a, err := sdb.Sign(typ, h, body, rootKey.PublicKey().ID())
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	ak := func(account string, pub asserts.PublicKey) asserts.Assertion {
		body, _ := asserts.EncodePublicKey(pub)
		return sign(asserts.AccountKeyType, map[string]any{"authority-id": "root", "account-id": account, "name": "k",
			"public-key-sha3-384": pub.ID(), "since": "2020-01-01T00:00:00Z"}, body)
	}
	acct := func(id string) asserts.Assertion {
		return sign(asserts.AccountType, map[string]any{"authority-id": "root", "account-id": id, "display-name": id,
			"validation": "verified", "timestamp": "2020-01-01T00:00:00Z"}, nil)
	}
	db, err := asserts.OpenDatabase(&asserts.DatabaseConfig{Backstore: asserts.NewMemoryBackstore(),
		Trusted: []asserts.Assertion{acct("root"), ak("root", rootKey.PublicKey())}})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []asserts.Assertion{acct("brand-x"), ak("brand-x", asserts.RSAPublicKey(brandPub))} {
		if err := db.Add(a); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

func decodeStream(t *testing.T, raw []byte) []asserts.Assertion {
	t.Helper()
	dec := asserts.NewDecoder(bytes.NewReader(raw))
	var out []asserts.Assertion
	for {
		a, err := dec.Decode()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("answer is not an assertion stream: %v\n%s", err, raw)
		}
		out = append(out, a)
	}
}

func errCodeOf(raw []byte) string {
	var eb wire.ErrorBody
	json.Unmarshal(raw, &eb)
	return eb.Error.Code
}

func TestDeviceRegistration(t *testing.T) {
	e := newDeviceEnv(t, false)
	db := trustingDB(t, e.brand)
	model := e.modelAssertion("line-1")
	dev := newDevice(t)
	rid := e.requestID("line-a")
	body := stream(dev.serialRequest(t, rid, "line-1", "SN-0001", nil), model)

	code, hdr, raw := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, body, map[string]string{"Snap-Device-Capabilities": "serial-stream"})
	if code != 200 || hdr.Get("Content-Type") != asserts.MediaType {
		t.Fatalf("serial: %d %s %s", code, hdr.Get("Content-Type"), raw)
	}
	as := decodeStream(t, raw)
	serial, ok := as[0].(*asserts.Serial)
	if !ok || serial.Serial() != "SN-0001" || serial.Model() != "line-1" || serial.DeviceKey().ID() != asserts.RSAPrivateKey(dev.priv).PublicKey().ID() {
		t.Fatalf("answer %v", as[0].Headers())
	}
	if err := db.Check(serial); err != nil {
		t.Fatalf("snapd refuses the serial: %v", err)
	}
	if string(serial.Body()) != "HW: test rig" {
		t.Fatalf("body not copied: %q", serial.Body())
	}

	// Replaying the request-id fails.
	code, hdr, raw = e.call("line-a", "POST", "/v1/serial", asserts.MediaType, body, nil)
	if code != http.StatusConflict || errCodeOf(raw) != "request-id-used" || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("replay: %d %s", code, raw)
	}
	// Another client's request-id fails: its MAC names line-b.
	ridB := e.requestID("line-b")
	code, _, raw = e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(dev.serialRequest(t, ridB, "line-1", "SN-0002", nil), model), nil)
	if code != http.StatusBadRequest || errCodeOf(raw) != "invalid-request-id" {
		t.Fatalf("another client's request-id: %d %s", code, raw)
	}
	// A client scoped to line-2 asking for line-1: 403 with a JSON message.
	code, hdr, raw = e.call("line-b", "POST", "/v1/serial", asserts.MediaType, stream(dev.serialRequest(t, e.requestID("line-b"), "line-1", "SN-0003", nil), model), nil)
	if code != http.StatusForbidden || hdr.Get("Content-Type") != "application/json" || !strings.Contains(string(raw), "client-model") {
		t.Fatalf("out of scope: %d %s %s", code, hdr.Get("Content-Type"), raw)
	}
	// The same serial and device key again: the stored serial, unchanged.
	code, _, raw2 := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(dev.serialRequest(t, e.requestID("line-a"), "line-1", "SN-0001", nil), model), nil)
	if code != 200 || !bytes.Equal(bytes.TrimSpace(raw2), bytes.TrimSpace(asserts.Encode(serial))) {
		t.Fatalf("idempotent retry: %d\n%s", code, raw2)
	}
	// The same serial with another device key: refused.
	other := newDevice(t)
	code, _, raw = e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(other.serialRequest(t, e.requestID("line-a"), "line-1", "SN-0001", nil), model), nil)
	if code != http.StatusConflict || errCodeOf(raw) != "serial-taken" {
		t.Fatalf("serial of another device: %d %s", code, raw)
	}
	// Bad input.
	for name, tc := range map[string]struct {
		ctype string
		body  []byte
		want  int
	}{
		"json":       {"application/json", body, 415},
		"garbage":    {asserts.MediaType, []byte("garbage"), 400},
		"no model":   {asserts.MediaType, dev.serialRequest(t, e.requestID("line-a"), "line-1", "SN-7", nil), 400},
		"model diff": {asserts.MediaType, stream(dev.serialRequest(t, e.requestID("line-a"), "line-9", "", nil), model), 400},
	} {
		code, hdr, raw := e.call("line-a", "POST", "/v1/serial", tc.ctype, tc.body, nil)
		if code != tc.want || hdr.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %s", name, code, raw)
		}
	}
	// An officer's session (officers have no other credential now) is
	// refused on a device endpoint, as is a credential of the old
	// officer form.
	if code, _, _ := e.call("", "POST", "/v1/request-id", "", nil, map[string]string{"api-key": e.creds["alice"]}); code != 403 {
		t.Errorf("officer session on a device endpoint: %d", code)
	}
	if code, _, _ := e.call("", "POST", "/v1/request-id", "", nil, map[string]string{"api-key": "krk_o_alice_" + strings.Repeat("0", 64)}); code != 403 {
		t.Errorf("old officer credential on a device endpoint: %d", code)
	}
	if code, _, _ := e.call("", "POST", "/v1/request-id", "", nil, nil); code != 401 {
		t.Errorf("no api key: %d", code)
	}

	// Durable records: the signing log has the serial, the audit chain the decisions.
	var log []store.LogEntry
	e.db.View(context.Background(), func(tx *store.Tx) error {
		log, _ = tx.SigningLog(store.LogFilter{Type: "serial"})
		return nil
	})
	if len(log) != 1 || log[0].Serial != "SN-0001" || log[0].Client != "line-a" || log[0].KeyID != serial.SignKeyID() || log[0].Digest == "" {
		t.Fatalf("signing log %+v", log)
	}
	acts := strings.Join(e.auditActions(), "\n")
	for _, want := range []string{"client:line-a serial.sign ok", "client:line-a serial.duplicate returned the stored serial", "client:line-a serial.duplicate refused"} {
		if !strings.Contains(acts, want) {
			t.Errorf("audit lacks %q", want)
		}
	}
	if _, err := e.db.VerifyAudit(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Metrics counted it, observed the token's latency, and pass promlint.
	code, _, m := e.call("", "GET", "/metrics", "", nil, nil)
	if code != 200 || !strings.Contains(string(m), `keyrack_signatures_total{key_id="`+serial.SignKeyID()+`",result="ok",type="serial"} 1`) {
		t.Errorf("metrics lack the serial signature")
	}
	if v := metricValue(t, m, `keyrack_token_sign_duration_seconds_count{result="ok"}`); v < 2 {
		t.Errorf("token sign latency observed %v times (want the model and the serial)", v)
	}
	for _, name := range []string{`keyrack_token_session_wait_seconds_count`, `keyrack_audit_events_total`,
		`keyrack_request_ids_total{event="issued"}`, `keyrack_serial_duplicates_refused_total`, `keyrack_policy_refusals_total{rule="client-model"}`,
		`keyrack_store_update_duration_seconds_count{durability="durable"}`, `keyrack_store_update_duration_seconds_count{durability="unsynced"}`} {
		if v := metricValue(t, m, name); v < 1 {
			t.Errorf("%s = %v", name, v)
		}
	}
	problems, err := promlint.New(bytes.NewReader(m)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// metricValue returns the value of the series named exactly (with labels).
func metricValue(t *testing.T, exposition []byte, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(string(exposition), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Errorf("no series %s", series)
	return -1
}

func TestConcurrentDuplicateSerials(t *testing.T) {
	e := newDeviceEnv(t, false)
	model := e.modelAssertion("line-1")
	const n = 20
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = stream(newDevice(t).serialRequest(t, e.requestID("line-a"), "line-1", "RACE-1", nil), model)
	}
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range bodies {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			// 503 means the bounded signing queue was full: retry as snapd
			// does (the request-id was not used).
			for {
				codes[i], _, _ = e.call("line-a", "POST", "/v1/serial", asserts.MediaType, bodies[i], nil)
				if codes[i] != http.StatusServiceUnavailable {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}(i)
	}
	wg.Wait()
	ok, conflict := 0, 0
	for _, c := range codes {
		switch c {
		case 200:
			ok++
		case 409:
			conflict++
		}
	}
	if ok != 1 || conflict != n-1 {
		t.Fatalf("%d parallel requests for one serial: %d issued, %d conflicts (%v)", n, ok, conflict, codes)
	}
	var log []store.LogEntry
	e.db.View(context.Background(), func(tx *store.Tx) error { log, _ = tx.SigningLog(store.LogFilter{Serial: "RACE-1"}); return nil })
	if len(log) != 1 {
		t.Fatalf("signing log has %d rows for the serial", len(log))
	}
}

func TestAssignedSerials(t *testing.T) {
	e := newDeviceEnv(t, true)
	m9 := e.modelAssertion("line-9")
	// Assigned serials: the device sends none and gets the next one.
	var got []string
	for i := 0; i < 2; i++ {
		code, _, raw := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(newDevice(t).serialRequest(t, e.requestID("line-a"), "line-9", "", nil), m9), nil)
		if code != 200 {
			t.Fatalf("assigned: %d %s", code, raw)
		}
		got = append(got, decodeStream(t, raw)[0].(*asserts.Serial).Serial())
	}
	if got[0] != "L9-1" || got[1] != "L9-2" {
		t.Fatalf("assigned serials %v", got)
	}
	code, _, raw := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(newDevice(t).serialRequest(t, e.requestID("line-a"), "line-9", "MINE", nil), m9), nil)
	if code != 400 || errCodeOf(raw) != "serial-assigned" {
		t.Fatalf("own serial on an assigning model: %d %s", code, raw)
	}
}

func TestKeyRolesGuardSigning(t *testing.T) {
	e := newDeviceEnv(t, false)
	// A key without the serial role can never be bound to sign serials.
	e.quorum("alice", "POST", "/v1/keys/generate", map[string]any{"name": "m-only", "roles": []map[string]any{{"type": "model"}}})
	a := e.do("alice", "POST", "/v1/models", map[string]any{"brand": "brand-x", "model": "line-2", "keys": map[string]string{"serial": "m-only"}})
	if a.Status != 400 || a.errCode() != "key-roles" {
		t.Fatalf("binding a model-only key to serials: %d %s", a.Status, a.Raw)
	}
	// A disabled key signs nothing.
	model := e.modelAssertion("line-1")
	var name string
	e.db.View(context.Background(), func(tx *store.Tx) error {
		mc, _ := tx.GetModel("brand-x", "line-1")
		name = mc.Keys["serial"]
		return nil
	})
	e.quorum("alice", "POST", "/v1/keys/"+name+"/disable", nil)
	code, _, raw := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(newDevice(t).serialRequest(t, e.requestID("line-a"), "line-1", "D-1", nil), model), nil)
	if code != 403 || errCodeOf(raw) != "key-not-active" {
		t.Fatalf("disabled key: %d %s", code, raw)
	}
}

func TestOtherAssertionsThroughTheAPI(t *testing.T) {
	e := newDeviceEnv(t, false)
	db := trustingDB(t, e.brand)
	model := decodeStream(t, e.modelAssertion("line-1"))[0]
	if err := db.Check(model); err != nil {
		t.Fatalf("model: %v", err)
	}
	su, _ := json.Marshal(map[string]any{"email": "ops@example.com", "username": "ops", "name": "Ops", "password": "pw-secret",
		"models": []string{"line-1"}, "serials": []string{"SN-1"}, "until": time.Now().AddDate(0, 1, 0)})
	code, _, raw := e.call("sign-a", "POST", "/v1/system-user", "application/json", su, nil)
	if code != 200 {
		t.Fatalf("system-user: %d %s", code, raw)
	}
	sua := decodeStream(t, raw)[0]
	if err := db.Check(sua); err != nil {
		t.Fatalf("system-user: %v", err)
	}
	if strings.Contains(string(raw), "pw-secret") {
		t.Fatal("plaintext password in the assertion")
	}
	pre, _ := json.Marshal(map[string]any{"model": "line-1", "system-label": "20261126", "artifact-sha3-384": "KPIl7M4vQ9d4AUjkoU41TGAwtOMLc_bWUCeW8AvdRWD4_xcP60Oo4ABs1No7BZsO",
		"snaps": []map[string]any{{"name": "pc", "id": "UqFziVZDHLSyO3TqSWgNBoAdHbLI4dAH", "revision": 145}}})
	code, _, raw = e.call("sign-a", "POST", "/v1/preseed", "application/json", pre, nil)
	if code != 200 {
		t.Fatalf("preseed: %d %s", code, raw)
	}
	if err := db.Check(decodeStream(t, raw)[0]); err != nil {
		t.Fatalf("preseed: %v", err)
	}
	// Nothing secret reached the audit log: no credential, no officer
	// session token (what officers hold now instead of a krk_o_
	// credential), no password.
	var evs []store.AuditEvent
	e.db.View(context.Background(), func(tx *store.Tx) error { evs, _ = tx.AuditEvents(0, 10000); return nil })
	for _, ev := range evs {
		all := ev.Actor + ev.Action + ev.Subject + ev.Result + ev.Details
		for _, secret := range append([]string{"pw-secret", "krk_o_", "krk_s_", "krk_c_", e.creds["alice"], e.creds["bob"], e.creds["carol"]}, e.apiKeys["line-a"], e.apiKeys["sign-a"]) {
			if strings.Contains(all, secret) {
				t.Fatalf("audit event %d carries a secret (%q): %s", ev.Seq, secret, all)
			}
		}
	}
	// Out of scope models are refused with the rule named.
	su2, _ := json.Marshal(map[string]any{"email": "a@b.c", "username": "x", "name": "X", "password": "p", "models": []string{"line-1", "line-2"},
		"until": time.Now().AddDate(0, 1, 0)})
	if code, _, raw := e.call("sign-a", "POST", "/v1/system-user", "application/json", su2, nil); code != 403 || !strings.Contains(string(raw), "client-model") {
		t.Fatalf("system-user for an unscoped model: %d %s", code, raw)
	}
	// The signing log as CSV.
	req, _ := http.NewRequest("GET", e.ts.URL+"/v1/signing-log?format=csv", nil)
	req.Header.Set("Authorization", "Bearer "+e.creds["alice"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(resp.Body).ReadAll()
	resp.Body.Close()
	if err != nil || len(rows) != 4 || rows[0][2] != "type" {
		t.Fatalf("CSV log: %v %v", rows, err)
	}
	types := []string{rows[1][2], rows[2][2], rows[3][2]}
	if strings.Join(types, ",") != "model,system-user,preseed" {
		t.Fatalf("logged types %v", types)
	}
}

func TestRemodel(t *testing.T) {
	e := newDeviceEnv(t, false)
	db := trustingDB(t, e.brand)
	m1, m9 := e.modelAssertion("line-1"), e.modelAssertion("line-9")
	dev := newDevice(t)
	code, _, raw := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(dev.serialRequest(t, e.requestID("line-a"), "line-1", "RM-1", nil), m1), nil)
	if code != 200 {
		t.Fatalf("first serial: %d %s", code, raw)
	}
	old := decodeStream(t, raw)[0]
	orig := map[string]any{"original-brand-id": "brand-x", "original-model": "line-1", "original-serial": "RM-1"}
	// line-9 assigns serials: the remodelled device keeps no serial from
	// the request, so the appliance assigns one for the new model.
	code, _, raw = e.call("line-a", "POST", "/v1/serial", asserts.MediaType,
		stream(dev.serialRequest(t, e.requestID("line-a"), "line-9", "", orig), m9, asserts.Encode(old)), nil)
	if code != 200 {
		t.Fatalf("remodel: %d %s", code, raw)
	}
	s := decodeStream(t, raw)[0].(*asserts.Serial)
	if s.Model() != "line-9" || s.Serial() != "L9-1" || s.DeviceKey().ID() != asserts.RSAPrivateKey(dev.priv).PublicKey().ID() {
		t.Fatalf("remodelled serial %v (want line-9's first number, L9-1, not line-1's serial)", s.Headers())
	}
	if err := db.Check(s); err != nil {
		t.Fatal(err)
	}
	// The old serial must belong to the same device key.
	other := newDevice(t)
	code, _, raw = e.call("line-a", "POST", "/v1/serial", asserts.MediaType,
		stream(other.serialRequest(t, e.requestID("line-a"), "line-9", "", orig), m9, asserts.Encode(old)), nil)
	if code != 400 || errCodeOf(raw) != "invalid-remodel" {
		t.Fatalf("remodel with another device's serial: %d %s", code, raw)
	}
	// And the original-* headers must match it.
	bad := map[string]any{"original-brand-id": "brand-x", "original-model": "line-1", "original-serial": "RM-2"}
	code, _, raw = e.call("line-a", "POST", "/v1/serial", asserts.MediaType,
		stream(dev.serialRequest(t, e.requestID("line-a"), "line-9", "", bad), m9, asserts.Encode(old)), nil)
	if code != 400 || errCodeOf(raw) != "invalid-remodel" {
		t.Fatalf("remodel with mismatched headers: %d %s", code, raw)
	}
}

func TestExpiredRequestIDs(t *testing.T) {
	e := newDeviceEnv(t, false, func(c *appliance.Config) { c.Devices.NonceTTL = appliance.Duration(50 * time.Millisecond) })
	rid := e.requestID("line-a")
	time.Sleep(100 * time.Millisecond)
	model := e.modelAssertion("line-1")
	code, _, raw := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(newDevice(t).serialRequest(t, rid, "line-1", "EX-1", nil), model), nil)
	if code != 400 || errCodeOf(raw) != "request-id-expired" {
		t.Fatalf("expired request-id: %d %s", code, raw)
	}
	_, _, m := e.call("", "GET", "/metrics", "", nil, nil)
	if !strings.Contains(string(m), `keyrack_request_ids_total{event="expired"} 1`) {
		t.Fatal("expired request-id not counted")
	}
}

// TestOverloadAnswers503 fills the signing queue and checks that one more
// request is answered 503 with Retry-After at once, as JSON.
func TestOverloadAnswers503(t *testing.T) {
	e := newDeviceEnv(t, false)
	_, places := e.srv.app.SigningQueue()
	for i := 0; i < places; i++ {
		_, release, err := e.srv.app.Admit(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer release()
	}
	start := time.Now()
	code, hdr, raw := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, []byte("x"), nil)
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" || hdr.Get("Content-Type") != "application/json" || errCodeOf(raw) != "overloaded" {
		t.Fatalf("full queue: %d %v %s", code, hdr, raw)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("the 503 took %v: it must not wait", took)
	}
	// Device endpoints that do not sign stay open.
	if code, _, _ := e.call("line-a", "POST", "/v1/request-id", "", nil, nil); code != 200 {
		t.Fatalf("request-id under overload: %d", code)
	}
}

// TestChangesElsewhereStopSignatures: a key disabled or a client revoked
// by another appliance sharing the store (here a second handle on the
// same database, whose changes this server's caches do not hear of) stops
// signatures at once: the transaction that would record the signature
// finds the change, discards the signature and frees the reservation.
func TestChangesElsewhereStopSignatures(t *testing.T) {
	e := newDeviceEnv(t, false)
	ctx := context.Background()
	model := e.modelAssertion("line-1")
	serial := func(sn string) (int, []byte) {
		code, _, raw := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(newDevice(t).serialRequest(t, e.requestID("line-a"), "line-1", sn, nil), model), nil)
		return code, raw
	}
	if code, raw := serial("E-1"); code != 200 {
		t.Fatalf("first serial: %d %s", code, raw)
	}
	other, err := store.OpenSQLite(ctx, e.srv.cfg.Store.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var key string
	logged := func() int {
		var n int
		other.View(ctx, func(tx *store.Tx) error {
			mc, _ := tx.GetModel("brand-x", "line-1")
			key = mc.Keys["serial"]
			rows, err := tx.SigningLog(store.LogFilter{Type: "serial"})
			n = len(rows)
			return err
		})
		return n
	}
	before := logged()
	onRecord := func(sn string) bool {
		var err error
		other.View(ctx, func(tx *store.Tx) error {
			_, err = tx.GetSerial("brand-x", "line-1", sn)
			return nil
		})
		return err == nil
	}

	if err := other.Update(ctx, func(tx *store.Tx) error { return tx.SetKeyState(key, store.KeyActive, store.KeyDisabled) }); err != nil {
		t.Fatal(err)
	}
	code, raw := serial("E-2")
	if code != 403 || errCodeOf(raw) != "key-not-active" || !strings.Contains(string(raw), "discarded") {
		t.Fatalf("key disabled elsewhere: %d %s", code, raw)
	}
	if logged() != before || onRecord("E-2") {
		t.Fatalf("a discarded signature left a record (log %d -> %d)", before, logged())
	}

	if err := other.Update(ctx, func(tx *store.Tx) error {
		if err := tx.SetKeyState(key, store.KeyDisabled, store.KeyActive); err != nil {
			return err
		}
		return tx.RevokeClient("line-a")
	}); err != nil {
		t.Fatal(err)
	}
	rid := e.requestID("line-a") // the cached client record still admits it
	code, _, raw = e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(newDevice(t).serialRequest(t, rid, "line-1", "E-3", nil), model), nil)
	if code != 401 {
		t.Fatalf("client revoked elsewhere: %d %s", code, raw)
	}
	if logged() != before || onRecord("E-3") {
		t.Fatalf("a signature for a revoked client left a record")
	}
	// Once the cached record expires, the revoked client is refused at
	// the door.
	time.Sleep(appliance.CacheTTL + 100*time.Millisecond)
	if code, _, raw := e.call("line-a", "POST", "/v1/request-id", "", nil, nil); code != 401 {
		t.Fatalf("revoked client after %v: %d %s", appliance.CacheTTL, code, raw)
	}
	// Every place in the signing queue was given back exactly once
	// (signed, discarded, refused).
	if n, _ := e.srv.app.SigningQueue(); n != 0 {
		t.Errorf("%d places in the signing queue still taken", n)
	}
}

// TestSerialPathStoreWork: once its caches are warm, a serial costs the
// store two write transactions (the reservation, the record) and no read
// transaction: the client, model and key come from memory, and what
// decides whether a signature leaves is read inside the recording
// transaction.
func TestSerialPathStoreWork(t *testing.T) {
	e := newDeviceEnv(t, false)
	model := e.modelAssertion("line-9")
	serial := func() {
		t.Helper()
		code, _, raw := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(newDevice(t).serialRequest(t, e.requestID("line-a"), "line-9", "", nil), model), nil)
		if code != 200 {
			t.Fatalf("serial: %d %s", code, raw)
		}
	}
	serial()
	views, commits := e.db.Views(), e.db.Commits()
	const n = 5
	for i := 0; i < n; i++ {
		serial()
	}
	// A request-id is not stored when issued (it carries its own MAC):
	// the claim is in the first commit of the serial.
	if v := e.db.Views() - views; v != 0 {
		t.Errorf("%d read transactions for %d serials, want none", v, n)
	}
	if c := e.db.Commits() - commits; c != 2*n {
		t.Errorf("%d commits for %d request-ids and serials, want %d", c, n, 2*n)
	}
}

// TestDiscardedSignaturesAudited: a signature the recording transaction
// discards (its key disabled, its client revoked by another appliance
// while the token signed) leaves no signing-log row, and the audit chain
// says what was discarded and why, for every assertion type.
func TestDiscardedSignaturesAudited(t *testing.T) {
	e := newDeviceEnv(t, false)
	ctx := context.Background()
	// Warm the caches: the model and serial bindings are not read again.
	model := e.modelAssertion("line-1")
	if code, _, raw := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(newDevice(t).serialRequest(t, e.requestID("line-a"), "line-1", "D-0", nil), model), nil); code != 200 {
		t.Fatalf("first serial: %d %s", code, raw)
	}
	other, err := store.OpenSQLite(ctx, e.srv.cfg.Store.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var keys map[string]string
	var logBefore int
	other.View(ctx, func(tx *store.Tx) error {
		mc, err := tx.GetModel("brand-x", "line-1")
		keys = mc.Keys
		rows, _ := tx.SigningLog(store.LogFilter{})
		logBefore = len(rows)
		return err
	})
	setKey := func(name string, from, to store.KeyState) {
		t.Helper()
		if err := other.Update(ctx, func(tx *store.Tx) error { return tx.SetKeyState(name, from, to) }); err != nil {
			t.Fatal(err)
		}
	}
	lastEvent := func() store.AuditEvent {
		t.Helper()
		var evs []store.AuditEvent
		other.View(ctx, func(tx *store.Tx) error { evs, err = tx.AuditEvents(0, 100000); return err })
		if len(evs) == 0 {
			t.Fatal("no audit events")
		}
		return evs[len(evs)-1]
	}
	e.ensureTemplate("line-1")
	modelBody, _ := json.Marshal(map[string]any{"model": "line-1"})

	setKey(keys["model"], store.KeyActive, store.KeyDisabled)
	code, _, raw := e.call("sign-a", "POST", "/v1/model", "application/json", modelBody, nil)
	if code != 403 || errCodeOf(raw) != "key-not-active" {
		t.Fatalf("model, key disabled elsewhere: %d %s", code, raw)
	}
	ev := lastEvent()
	if ev.Action != "model.sign" || ev.Actor != "client:sign-a" || ev.Subject != "brand-x/line-1" ||
		ev.Result != "discarded: key "+keys["model"]+" became disabled while signing" || !strings.Contains(ev.Details, `"digest":`) {
		t.Fatalf("audit event for the discarded model: %+v", ev)
	}
	setKey(keys["model"], store.KeyDisabled, store.KeyActive)

	setKey(keys["serial"], store.KeyActive, store.KeyDisabled)
	code, _, raw = e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(newDevice(t).serialRequest(t, e.requestID("line-a"), "line-1", "D-1", nil), model), nil)
	if code != 403 || errCodeOf(raw) != "key-not-active" {
		t.Fatalf("serial, key disabled elsewhere: %d %s", code, raw)
	}
	if ev := lastEvent(); ev.Action != "serial.sign" || ev.Subject != "brand-x/line-1/D-1" ||
		ev.Result != "discarded: key "+keys["serial"]+" became disabled while signing" || !strings.Contains(ev.Details, `"digest":`) {
		t.Fatalf("audit event for the discarded serial: %+v", ev)
	}
	setKey(keys["serial"], store.KeyDisabled, store.KeyActive)

	if err := other.Update(ctx, func(tx *store.Tx) error { return tx.RevokeClient("sign-a") }); err != nil {
		t.Fatal(err)
	}
	code, _, raw = e.call("sign-a", "POST", "/v1/model", "application/json", modelBody, nil)
	if code != 401 {
		t.Fatalf("model, client revoked elsewhere: %d %s", code, raw)
	}
	if ev := lastEvent(); ev.Action != "model.sign" || ev.Result != "discarded: client revoked while signing" {
		t.Fatalf("audit event for the model discarded for a revoked client: %+v", ev)
	}
	var logAfter int
	other.View(ctx, func(tx *store.Tx) error {
		rows, err := tx.SigningLog(store.LogFilter{})
		logAfter = len(rows)
		return err
	})
	if logAfter != logBefore {
		t.Fatalf("discarded signatures reached the signing log: %d -> %d rows", logBefore, logAfter)
	}
	// The chain with the discards in it still verifies.
	if _, err := other.VerifyAudit(ctx); err != nil {
		t.Fatalf("audit chain: %v", err)
	}
}
