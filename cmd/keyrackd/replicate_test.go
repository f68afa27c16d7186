package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/assertion"
	"github.com/keyrack/keyrack/appliance/device"
	"github.com/keyrack/keyrack/hsm/keywrap"
	"github.com/keyrack/keyrack/softhsm"
)

// TestReplicateToSecondToken: two appliances share a PostgreSQL store but
// not a token. A brand key imported on A is replicated to B's token from a
// blob wrapped to B's import key; B then signs serials with the same key.
func TestReplicateToSecondToken(t *testing.T) {
	dsn := postgresDSN(t)
	work := t.TempDir()
	brand, err := rsa.GenerateKey(rand.Reader, 4096)
	if err != nil {
		t.Fatal(err)
	}
	brandDER, _ := x509.MarshalPKCS8PrivateKey(brand)

	type appl struct {
		tok  *softhsm.Token
		cfg  string
		addr string
	}
	mk := func(name string) appl {
		tok, err := softhsm.Create(filepath.Join(work, name+"-token"), "hsm-"+name)
		if err != nil {
			t.Fatal(err)
		}
		addr := freeAddr(t)
		return appl{tok, writePostgresConfig(t, work, name, addr, dsn, tok), addr}
	}
	A, B := mk("a"), mk("b")

	// Demo data, in process on A's token.
	A.tok.Activate()
	seedDemo(t, A.cfg, dsn, work)
	for _, a := range []appl{A, B} {
		startWithConfig(t, a.cfg, a.addr, a.tok.Env())
	}
	officer, _ := os.ReadFile(filepath.Join(work, "officer-token"))
	call := func(a appl, method, path string, body any) (int, map[string]any) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, "http://"+a.addr+path, rd)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(officer)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	wrapFor := func(a appl, der []byte) []byte {
		_, ik := call(a, "GET", "/v1/import-key", nil)
		block, _ := pem.Decode([]byte(ik["public_key_pem"].(string)))
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		blob, err := keywrap.Wrap(pub.(*rsa.PublicKey), der)
		if err != nil {
			t.Fatal(err)
		}
		return blob
	}
	roles := []map[string]any{{"type": "serial", "models": []string{appliance.DemoModel}}, {"type": "model", "models": []string{appliance.DemoModel}}}
	if code, out := call(A, "POST", "/v1/keys/import", map[string]any{"name": "brand-main", "roles": roles, "blob": wrapFor(A, brandDER)}); code != 200 {
		t.Fatalf("import on A: %d %v", code, out)
	}
	if code, out := call(A, "POST", "/v1/models", map[string]any{"brand": appliance.DemoBrand, "model": appliance.DemoModel,
		"keys": map[string]string{"serial": "brand-main", "model": "brand-main"}, "serial-source": "assign", "serial-prefix": "R-"}); code != 200 {
		t.Fatalf("model binding: %d %v", code, out)
	}
	// B's token lacks the key: B cannot sign yet.
	apiKey, _ := os.ReadFile(filepath.Join(work, "api-key"))
	cb := &device.Client{URL: "http://" + B.addr + "/v1/", APIKey: strings.TrimSpace(string(apiKey))}
	if _, err := cb.SignModel(context.Background(), appliance.DemoModel); err == nil {
		t.Fatal("B signed without the key in its token")
	}
	// A blob of another key is refused, and leaves nothing in B's token
	// (the replication below would refuse a taken label or CKA_ID).
	other, _ := rsa.GenerateKey(rand.Reader, 4096)
	otherDER, _ := x509.MarshalPKCS8PrivateKey(other)
	if code, out := call(B, "POST", "/v1/keys/brand-main/replicate", map[string]any{"blob": wrapFor(B, otherDER)}); code != 400 {
		t.Fatalf("replicating another key: %d %v", code, out)
	}
	// A blob for A's import key cannot be used at B either.
	if code, _ := call(B, "POST", "/v1/keys/brand-main/replicate", map[string]any{"blob": wrapFor(A, brandDER)}); code != 400 {
		t.Fatalf("replicating A's blob at B: %d", code)
	}
	if code, out := call(B, "POST", "/v1/keys/brand-main/replicate", map[string]any{"blob": wrapFor(B, brandDER)}); code != 200 {
		t.Fatalf("replicate to B: %d %v", code, out)
	}
	if code, _ := call(B, "POST", "/v1/keys/brand-main/replicate", map[string]any{"blob": wrapFor(B, brandDER)}); code != http.StatusConflict {
		t.Fatalf("second replication to B: %d", code)
	}
	// Both appliances now sign with the brand key.
	model, err := cb.SignModel(context.Background(), appliance.DemoModel)
	if err != nil {
		t.Fatalf("B signs after replication: %v", err)
	}
	dev, _ := device.New(appliance.DemoBrand, appliance.DemoModel, 2048)
	dev.ModelAssertion = model
	s, _, err := cb.Register(context.Background(), dev, "")
	if err != nil {
		t.Fatal(err)
	}
	want, err := assertion.KeyID(&brand.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.SignKeyID(); got != want {
		t.Fatalf("B signed with %s, want the brand key %s", got, want)
	}
}
