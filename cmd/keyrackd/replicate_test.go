package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/assertion"
	"github.com/keyrack/keyrack/appliance/auditverify"
	"github.com/keyrack/keyrack/appliance/device"
	"github.com/keyrack/keyrack/appliance/store"
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
	officers := map[string]*officer{A.addr: demoOfficer(t, work, A.addr), B.addr: demoOfficer(t, work, B.addr)}
	call := func(a appl, method, path string, body any) (int, map[string]any) {
		t.Helper()
		return officers[a.addr].call(method, path, body)
	}
	// A ceremony step: the proposal, signed and approved by the demo
	// officer (quorum 1).
	ceremony := func(a appl, method, path string, body any) (int, map[string]any) {
		t.Helper()
		return officers[a.addr].ceremony(method, path, body)
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
	brandID, err := assertion.KeyID(&brand.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if code, out := ceremony(A, "POST", "/v1/keys/import", map[string]any{"name": "brand-main", "roles": roles, "blob": wrapFor(A, brandDER), "sign-key-sha3-384": brandID}); code != 200 {
		t.Fatalf("import on A: %d %v", code, out)
	}
	if code, out := ceremony(A, "POST", "/v1/models", map[string]any{"brand": appliance.DemoBrand, "model": appliance.DemoModel,
		"keys": map[string]string{"serial": "brand-main", "model": "brand-main"}, "serial-source": "assign", "serial-prefix": "R-"}); code != 200 {
		t.Fatalf("model binding: %d %v", code, out)
	}
	// B's token lacks the key: B cannot sign yet.
	apiKey, _ := os.ReadFile(filepath.Join(work, "api-key"))
	cb := &device.Client{URL: "http://" + B.addr + "/v1/", APIKey: strings.TrimSpace(string(apiKey))}
	signingKey, _ := os.ReadFile(filepath.Join(work, "signing-key"))
	signerB := &device.Client{URL: cb.URL, APIKey: strings.TrimSpace(string(signingKey))}
	if _, err := signerB.SignModel(context.Background(), appliance.DemoModel); err == nil {
		t.Fatal("B signed without the key in its token")
	}
	// A blob of another key is refused, and leaves nothing in B's token
	// (the replication below would refuse a taken label or CKA_ID).
	other, _ := rsa.GenerateKey(rand.Reader, 4096)
	otherDER, _ := x509.MarshalPKCS8PrivateKey(other)
	if code, out := ceremony(B, "POST", "/v1/keys/brand-main/replicate", map[string]any{"blob": wrapFor(B, otherDER)}); code != 400 {
		t.Fatalf("replicating another key: %d %v", code, out)
	}
	// A blob for A's import key cannot be used at B either.
	if code, _ := ceremony(B, "POST", "/v1/keys/brand-main/replicate", map[string]any{"blob": wrapFor(A, brandDER)}); code != 400 {
		t.Fatalf("replicating A's blob at B: %d", code)
	}
	if code, out := ceremony(B, "POST", "/v1/keys/brand-main/replicate", map[string]any{"blob": wrapFor(B, brandDER)}); code != 200 {
		t.Fatalf("replicate to B: %d %v", code, out)
	}
	if code, _ := ceremony(B, "POST", "/v1/keys/brand-main/replicate", map[string]any{"blob": wrapFor(B, brandDER)}); code != http.StatusConflict {
		t.Fatalf("second replication to B: %d", code)
	}
	// Both appliances now sign with the brand key.
	model, err := signerB.SignModel(context.Background(), appliance.DemoModel)
	if err != nil {
		t.Fatalf("B signs after replication: %v", err)
	}
	dev, _ := device.New(appliance.DemoBrand, appliance.DemoModel, 2048)
	dev.ModelAssertion = model
	s, _, err := cb.Register(context.Background(), dev, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.SignKeyID(); got != brandID {
		t.Fatalf("B signed with %s, want the brand key %s", got, brandID)
	}

	// One chain, anchored by both tokens: each appliance has its own audit
	// key and checkpointed after its officers' actions; the shared store
	// verifies whole, tables and signing log included.
	db, err := store.OpenPostgres(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var signers int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		db.View(context.Background(), func(tx *store.Tx) error {
			cs, err := tx.Checkpoints(0, 10000)
			keys := map[string]bool{}
			for _, c := range cs {
				keys[c.Key] = true
			}
			signers = len(keys)
			return err
		})
		if signers == 2 {
			break
		}
	}
	r, err := auditverify.VerifyStore(context.Background(), db, nil, nil)
	if err != nil || len(r.Keys) != 2 || signers != 2 || r.Checkpoints < 2 || r.Signatures == 0 {
		t.Fatalf("the shared chain: %+v, %d keys signed checkpoints: %v", r, signers, err)
	}
}
