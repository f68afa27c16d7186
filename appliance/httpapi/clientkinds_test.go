package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/internal/testpki"
)

// Tests that play the outsider holding a device (and so the public
// device-service key) and a signing client's holder reaching past what
// officers allowed (issue 18, item 1).

// fromJSON posts body to path as if from remote, with apiKey.
func (e *deviceEnv) fromJSON(remote, path, apiKey string, body []byte) (int, []byte) {
	e.t.Helper()
	req := httptest.NewRequest("POST", path, bytes.NewReader(body))
	req.RemoteAddr = remote
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("api-key", apiKey)
	rec := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

func asJSON(v any) []byte { b, _ := json.Marshal(v); return b }

// refusedBy checks an answer is 403 with code (at the top level, where
// snapd reads it) and a message containing msg.
func refusedBy(t *testing.T, what string, code int, raw []byte, status int, want, msg string) {
	t.Helper()
	var b struct{ Code, Message string }
	if err := json.Unmarshal(raw, &b); err != nil || code != status || b.Code != want || !strings.Contains(b.Message, msg) {
		t.Fatalf("%s: %d %s (want %d %s, a message with %q)", what, code, raw, status, want, msg)
	}
}

func (e *deviceEnv) signedCount(types ...string) int {
	e.t.Helper()
	n := 0
	for _, typ := range types {
		e.db.View(context.Background(), func(tx *store.Tx) error {
			rows, err := tx.SigningLog(store.LogFilter{Type: typ})
			n += len(rows)
			return err
		})
	}
	return n
}

// TestPublicDeviceKeyObtainsSerialsOnly plays the outsider who took the
// api-key out of a gadget image: the system-user with their SSH key valid
// until 9999-12-31, a model of their own and a preseed are refused
// (client-kind), and nothing is signed; the key still gets request-ids and
// serials. A signing client's key is refused on request-id and serial.
func TestPublicDeviceKeyObtainsSerialsOnly(t *testing.T) {
	e := newDeviceEnv(t, false)
	public := "line-a"
	for _, tc := range []struct {
		path string
		body any
	}{
		{"/v1/system-user", map[string]any{"email": "mallory@example.com", "username": "mallory", "name": "M",
			"ssh-keys": []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGr2l1r0Vn4NTw5H4b0wIq1K9YwU6Fq+3o8mV8N4Z0aR mallory"},
			"models":   []string{"line-1"}, "until": "9999-12-31T00:00:00Z"}},
		{"/v1/model", map[string]any{"headers": map[string]any{"model": "line-1", "architecture": "amd64", "gadget": "pc",
			"kernel": "pc-kernel", "base": "core22", "grade": "dangerous", "system-user-authority": "*",
			"timestamp": "2026-01-01T00:00:00Z"}}},
		{"/v1/preseed", map[string]any{"model": "line-1", "system-label": "20261126", "artifact-sha3-384": "KPIl7M4vQ9d4AUjkoU41TGAwtOMLc_bWUCeW8AvdRWD4_xcP60Oo4ABs1No7BZsO",
			"snaps": []map[string]any{{"name": "pc", "id": "UqFziVZDHLSyO3TqSWgNBoAdHbLI4dAH", "revision": 145}}}},
	} {
		code, _, raw := e.call(public, "POST", tc.path, "application/json", asJSON(tc.body), nil)
		refusedBy(t, "the public device-service key on "+tc.path, code, raw, http.StatusForbidden, "client-kind", "device-service client")
	}
	if n := e.signedCount("model", "system-user", "preseed"); n != 0 {
		t.Fatalf("%d assertions signed for the public key", n)
	}
	// What the key is for still works.
	model := e.modelAssertion("line-1")
	if code, _, raw := e.call(public, "POST", "/v1/serial", asserts.MediaType,
		stream(newDevice(t).serialRequest(t, e.requestID(public), "line-1", "K-1", nil), model), nil); code != http.StatusOK {
		t.Fatalf("a serial with the device-service key: %d %s", code, raw)
	}
	// A signing client's key is not a gadget's.
	code, _, raw := e.call("sign-a", "POST", "/v1/request-id", "", nil, nil)
	refusedBy(t, "a signing key on request-id", code, raw, http.StatusForbidden, "client-kind", "signing client")
	code, _, raw = e.call("sign-a", "POST", "/v1/serial", asserts.MediaType,
		stream(newDevice(t).serialRequest(t, e.requestID(public), "line-1", "K-2", nil), model), nil)
	refusedBy(t, "a signing key on serial", code, raw, http.StatusForbidden, "client-kind", "signing client")
}

// TestMixedClientRefused: officers cannot create a client that has serial
// with another type, whatever kind they name; the refusal says why.
func TestMixedClientRefused(t *testing.T) {
	e := newDeviceEnv(t, false)
	for _, req := range []map[string]any{
		{"name": "mixed", "brand": "brand-x", "models": []string{"line-1"}, "types": []string{"serial", "system-user"}},
		{"name": "mixed", "kind": "device-service", "brand": "brand-x", "models": []string{"line-1"}, "types": []string{"serial", "model"}},
		{"name": "mixed", "kind": "signing", "brand": "brand-x", "models": []string{"line-1"}, "types": []string{"preseed", "serial"}},
	} {
		a := e.propose("alice", "POST", "/v1/clients", req)
		if a.Status != http.StatusBadRequest || a.Body["code"] != "client-kind" || !strings.Contains(a.Body["message"].(string), "gadget image") {
			t.Fatalf("a mixed client %v: %d %s", req, a.Status, a.Raw)
		}
	}
	for _, tc := range []struct {
		req map[string]any
		msg string
	}{
		{map[string]any{"name": "x", "kind": "signing", "brand": "brand-x", "models": []string{"line-1"}, "types": []string{"model"},
			"limits": map[string]any{"max-validity-days": 4000}}, "max-validity-days"},
		{map[string]any{"name": "x", "kind": "signing", "brand": "brand-x", "models": []string{"line-1"}, "types": []string{"model"},
			"limits": map[string]any{"models": []string{"line-2"}}}, "not one of the client's models"},
		{map[string]any{"name": "x", "kind": "device-service", "brand": "brand-x", "models": []string{"line-1"},
			"client-cert-sha256": strings.Repeat("ab", 32)}, "client certificate"},
	} {
		if a := e.propose("alice", "POST", "/v1/clients", tc.req); a.Status != http.StatusBadRequest || !strings.Contains(a.Body["message"].(string), tc.msg) {
			t.Fatalf("client %v: %d %s", tc.req, a.Status, a.Raw)
		}
	}
}

// TestSigningClientNeedsTLS: on an appliance that is not a dev appliance,
// a signing client's key sent over plain HTTP from another machine is
// refused (tls-required); from this machine it is taken. The public
// device-service key is taken over plain HTTP (snapd may use it).
func TestSigningClientNeedsTLS(t *testing.T) {
	e := newDeviceEnv(t, false, func(c *appliance.Config) { c.Dev = false })
	e.ensureTemplate("line-1")
	body := asJSON(map[string]any{"model": "line-1"})
	code, raw := e.fromJSON("192.0.2.10:4000", "/v1/model", e.apiKeys["sign-a"], body)
	refusedBy(t, "a signing key over plain HTTP from elsewhere", code, raw, http.StatusForbidden, "tls-required", "HTTPS")
	if code, raw := e.fromJSON("127.0.0.1:4000", "/v1/model", e.apiKeys["sign-a"], body); code != http.StatusOK {
		t.Fatalf("a signing key from this machine: %d %s", code, raw)
	}
	if code, raw := e.fromJSON("192.0.2.10:4000", "/v1/request-id", e.apiKeys["line-a"], nil); code != http.StatusOK {
		t.Fatalf("the device-service key over plain HTTP: %d %s", code, raw)
	}
}

// TestCertBoundSigningClient: a signing client bound to a TLS client
// certificate at creation is refused without one and with another (even
// one from the same CA), on every request, and served with its own.
func TestCertBoundSigningClient(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "keyrack test CA")
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	srvCert, srvKey := ca.Issue(t, "127.0.0.1", x509.ExtKeyUsageServerAuth)
	erpCert, erpKey := ca.Issue(t, "erp", x509.ExtKeyUsageClientAuth)
	otherCert, otherKey := ca.Issue(t, "another tool", x509.ExtKeyUsageClientAuth)
	e := newDeviceEnv(t, false, func(c *appliance.Config) {
		c.Dev = false
		c.TLS.CertFile, c.TLS.KeyFile, c.TLS.ClientCAFile = write("srv.pem", srvCert), write("srv.key", srvKey), write("ca.pem", ca.PEM)
	})
	block, _ := pem.Decode(erpCert)
	sum := sha256.Sum256(block.Bytes)
	e.createClient("erp", map[string]any{"kind": "signing", "brand": "brand-x", "models": []string{"line-1"}, "types": []string{"model"},
		"client-cert-sha256": hex.EncodeToString(sum[:])})
	e.ensureTemplate("line-1")
	addr, stop := e.serve()
	defer stop()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM)
	post := func(certPEM, keyPEM []byte) (int, []byte) {
		t.Helper()
		tc := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
		if certPEM != nil {
			kp, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			tc.Certificates = []tls.Certificate{kp}
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 30 * time.Second}
		req, _ := http.NewRequest("POST", "https://"+addr+"/v1/model", bytes.NewReader(asJSON(map[string]any{"model": "line-1"})))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("api-key", e.apiKeys["erp"])
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, raw
	}
	code, raw := post(nil, nil)
	refusedBy(t, "the bound client without a certificate", code, raw, http.StatusForbidden, "client-certificate", "presented none")
	code, raw = post(otherCert, otherKey)
	refusedBy(t, "the bound client with another certificate", code, raw, http.StatusForbidden, "client-certificate", "presented another")
	if code, raw := post(erpCert, erpKey); code != http.StatusOK {
		t.Fatalf("the bound client with its certificate: %d %s", code, raw)
	}
	// A client bound to nothing is served over TLS without a certificate.
	e.apiKeys["erp"] = e.apiKeys["sign-a"]
	if code, raw := post(nil, nil); code != http.StatusOK {
		t.Fatalf("an unbound signing client over TLS: %d %s", code, raw)
	}
}

// TestSystemUserLimits plays a signing client's holder asking for more
// than its limits: a system-user valid beyond the longest validity
// (whatever its models), one starting years ahead, a password where only
// SSH keys are allowed, no serials where they are required, a model
// outside the limits (and a preseed for it). Each is refused naming the
// limit; within the limits it is signed; officers widen a limit by a
// ceremony.
func TestSystemUserLimits(t *testing.T) {
	e := newDeviceEnv(t, false)
	e.createClient("erp", map[string]any{"kind": "signing", "brand": "brand-x", "models": []string{"line-1", "line-9"},
		"types": []string{"system-user", "preseed"}, "limits": map[string]any{"models": []string{"line-1"}}})
	now := time.Now().UTC()
	su := func(change func(map[string]any)) []byte {
		m := map[string]any{"email": "ops@example.com", "username": "ops", "name": "Ops",
			"ssh-keys": []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGr2l1r0Vn4NTw5H4b0wIq1K9YwU6Fq+3o8mV8N4Z0aR ops"},
			"models":   []string{"line-1"}, "serials": []string{"SN-1"}, "until": now.AddDate(0, 1, 0)}
		change(m)
		return asJSON(m)
	}
	for _, tc := range []struct {
		what   string
		change func(map[string]any)
		limit  string
		msg    string
	}{
		{"until 9999-12-31", func(m map[string]any) { m["until"] = "9999-12-31T00:00:00Z" }, "limit-validity", "at most 365 days"},
		{"since years back", func(m map[string]any) { m["since"] = "2000-01-01T00:00:00Z" }, "limit-validity", "after since"},
		{"366 days", func(m map[string]any) { m["until"] = now.Add(366 * 24 * time.Hour) }, "limit-validity", "365 days"},
		{"a day, years ahead", func(m map[string]any) {
			m["since"], m["until"] = now.AddDate(5, 0, 0), now.AddDate(5, 0, 1)
		}, "limit-validity", "from now"},
		{"a password", func(m map[string]any) { delete(m, "ssh-keys"); m["password"] = "pw-secret" }, "limit-password", "password"},
		{"no serials", func(m map[string]any) { delete(m, "serials") }, "limit-serials", "require serials"},
		{"a model outside the limits", func(m map[string]any) { m["models"] = []string{"line-9"} }, "limit-models", `"line-9"`},
	} {
		code, _, raw := e.call("erp", "POST", "/v1/system-user", "application/json", su(tc.change), nil)
		refusedBy(t, "system-user with "+tc.what, code, raw, http.StatusForbidden, tc.limit, tc.msg)
	}
	pre := func(model string) []byte {
		return asJSON(map[string]any{"model": model, "system-label": "20261126", "artifact-sha3-384": "KPIl7M4vQ9d4AUjkoU41TGAwtOMLc_bWUCeW8AvdRWD4_xcP60Oo4ABs1No7BZsO",
			"snaps": []map[string]any{{"name": "pc", "id": "UqFziVZDHLSyO3TqSWgNBoAdHbLI4dAH", "revision": 145}}})
	}
	code, _, raw := e.call("erp", "POST", "/v1/preseed", "application/json", pre("line-9"), nil)
	refusedBy(t, "preseed for a model outside the limits", code, raw, http.StatusForbidden, "limit-models", `"line-9"`)
	if n := e.signedCount("system-user", "preseed"); n != 0 {
		t.Fatalf("%d assertions signed beyond the limits", n)
	}
	// Within the limits.
	if code, _, raw := e.call("erp", "POST", "/v1/system-user", "application/json", su(func(map[string]any) {}), nil); code != http.StatusOK {
		t.Fatalf("system-user within the limits: %d %s", code, raw)
	}
	if code, _, raw := e.call("erp", "POST", "/v1/preseed", "application/json", pre("line-1"), nil); code != http.StatusOK {
		t.Fatalf("preseed within the limits: %d %s", code, raw)
	}
	// Officers allow system-users without serials, by a ceremony that
	// changes that limit only.
	if a := e.propose("alice", "POST", "/v1/clients/erp/limits", map[string]any{"max-validity-days": 4000}); a.Status != http.StatusBadRequest ||
		a.Body["code"] != "invalid-limits" {
		t.Fatalf("limits beyond the ceiling: %d %s", a.Status, a.Raw)
	}
	if a := e.propose("alice", "POST", "/v1/clients/line-a/limits", map[string]any{"serials-required": false}); a.Status != http.StatusBadRequest ||
		a.Body["code"] != "client-kind" {
		t.Fatalf("limits for a device-service client: %d %s", a.Status, a.Raw)
	}
	e.quorum("alice", "POST", "/v1/clients/erp/limits", map[string]any{"serials-required": false})
	noSerials := su(func(m map[string]any) { delete(m, "serials") })
	if code, _, raw := e.call("erp", "POST", "/v1/system-user", "application/json", noSerials, nil); code != http.StatusOK {
		t.Fatalf("system-user without serials once allowed: %d %s", code, raw)
	}
	list := e.do("bob", "GET", "/v1/clients", nil)
	if !strings.Contains(string(list.Raw), `"name":"erp","kind":"signing"`) ||
		!strings.Contains(string(list.Raw), `"limits":{"models":["line-1"],"max-validity-days":365,"password":false,"ssh-keys":true,"serials-required":false}`) {
		t.Fatalf("clients: %s", list.Raw)
	}
	// The rest of the limits still hold.
	code, _, raw = e.call("erp", "POST", "/v1/system-user", "application/json", su(func(m map[string]any) { m["until"] = "9999-12-31T00:00:00Z" }), nil)
	refusedBy(t, "until 9999-12-31 after the change", code, raw, http.StatusForbidden, "limit-validity", "365 days")
}
