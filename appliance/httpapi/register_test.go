package httpapi

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/snapcore/snapd/asserts"
)

// storeAccountKey plays the Brand Store: it issues an account-key for pub,
// signed by a stand-in store key (the appliance does not check who signed
// it; devices do).
func storeAccountKey(t *testing.T, pub *rsa.PublicKey, constraints []any) []byte {
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
	db.ImportKey(rk)
	apub := asserts.RSAPublicKey(pub)
	body, _ := asserts.EncodePublicKey(apub)
	h := map[string]any{"authority-id": "canonical", "account-id": "brand-x", "name": "k", "public-key-sha3-384": apub.ID(),
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

func (e *ceremonyEnv) putAccountKey(name string, data []byte) answer {
	req, _ := http.NewRequest("PUT", e.ts.URL+"/v1/keys/"+name+"/account-key", strings.NewReader(string(data)))
	req.Header.Set("Authorization", "Bearer "+e.creds["alice"])
	req.Header.Set("Content-Type", "application/x.ubuntu.assertion")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return answer{Status: resp.StatusCode, Raw: string(raw)}
}

func TestRegistration(t *testing.T) {
	e := newCeremonyEnv(t, 2, "1h")
	roles := []map[string]any{{"type": "serial", "models": []string{"line-.*", "bench"}}}
	id := e.propose("alice", "POST", "/v1/keys/generate", map[string]any{"name": "r-key", "roles": roles}).proposalID()
	e.approve("bob", id)
	k := e.key("r-key")
	pubAny, _ := x509.ParsePKIXPublicKey(k.PublicKey)
	pub := pubAny.(*rsa.PublicKey)

	if a := e.do("alice", "GET", "/v1/keys/r-key/export", nil); a.Status != 400 {
		t.Fatalf("export without account-id: %d", a.Status)
	}
	x := e.do("alice", "GET", "/v1/keys/r-key/export?account-id=brand-x", nil)
	if x.Status != 200 {
		t.Fatalf("export: %d %s", x.Status, x.Raw)
	}
	akr, err := asserts.Decode([]byte(x.Body["account-key-request"].(string)))
	if err != nil {
		t.Fatal(err)
	}
	if err := asserts.SignatureCheck(akr, asserts.RSAPublicKey(pub)); err != nil {
		t.Fatalf("account-key-request not self-signed by the key: %v", err)
	}
	if akr.HeaderString("public-key-sha3-384") != k.KeyID || akr.HeaderString("account-id") != "brand-x" {
		t.Fatalf("%v", akr.Headers())
	}
	if !strings.Contains(x.Raw, `"model":["bench","line-.*"]`) {
		t.Fatalf("constraints in export: %s", x.Raw)
	}
	// The public key, in the export and in the key's record, is what
	// `snap export-key NAME` prints: snapd's own decoder reads it as this
	// key (it was base64-encoded once more, which snapd refused with
	// "unsupported public key format version").
	for where, v := range map[string]any{"export": x.Body["public-key"], "record": e.do("alice", "GET", "/v1/keys/r-key", nil).Body["public-key"]} {
		text, _ := v.(string)
		if dpub, err := asserts.DecodePublicKey([]byte(text)); err != nil || dpub.ID() != k.KeyID {
			t.Errorf("public-key in the %s: %v (%q)", where, err, text)
		}
	}

	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	for name, tc := range map[string]struct {
		data   []byte
		status int
	}{
		"garbage":       {[]byte("nope"), 400},
		"another key":   {storeAccountKey(t, &other.PublicKey, nil), 400},
		"wider":         {storeAccountKey(t, pub, []any{map[string]any{"headers": map[string]any{"type": "serial", "model": ".*"}}}), 400},
		"other type":    {storeAccountKey(t, pub, []any{map[string]any{"headers": map[string]any{"type": "model"}}}), 400},
		"narrower":      {storeAccountKey(t, pub, []any{map[string]any{"headers": map[string]any{"type": "serial", "model": "bench"}}}), 200},
		"unconstrained": {storeAccountKey(t, pub, nil), 200},
	} {
		if a := e.putAccountKey("r-key", tc.data); a.Status != tc.status {
			t.Errorf("%s: %d %s", name, a.Status, a.Raw)
		}
	}
	if g := e.do("alice", "GET", "/v1/keys/r-key", nil); g.Body["account-key-present"] != true {
		t.Fatalf("account key not recorded: %s", g.Raw)
	}
}
