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
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/officerkey"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
	"github.com/keyrack/keyrack/internal/testpki"
	"golang.org/x/crypto/ssh"
)

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "keyrack test CA")
	srvCert, srvKey := ca.Issue(t, "appliance", x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := ca.Issue(t, "officer alice", x509.ExtKeyUsageClientAuth)
	otherCert, otherKey := ca.Issue(t, "officer bob", x509.ExtKeyUsageClientAuth)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o600)
		return p
	}
	cfg, err := appliance.ParseConfig(strings.NewReader(fmt.Sprintf(`{"dev": true, "state_dir": %q,
		"tls": {"cert_file": %q, "key_file": %q, "client_ca_file": %q, "officer_client_cert": true},
		"token": {"module": %q, "label": %q, "pin_file": %q}}`, dir,
		write("srv.pem", srvCert), write("srv.key", srvKey), write("ca.pem", ca.PEM),
		testTok.Module, testTok.Label, testTok.PINFile)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, err := store.OpenSQLite(ctx, cfg.Store.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// Two officers: the default quorum of 2 must be reachable for the
	// appliance to start.
	// alice's client certificate is bound to her at enrolment; bob has
	// none bound.
	aliceKey, bobKey := newOfficerKey(t), newOfficerKey(t)
	block, _ := pem.Decode(cliCert)
	aliceCert := sha256.Sum256(block.Bytes)
	if err := appliance.BootstrapOfficers(ctx, db, []appliance.OfficerKey{
		{Name: "alice", PublicKey: officerkey.Authorized(aliceKey.PublicKey()), CertSHA256: hex.EncodeToString(aliceCert[:])},
		{Name: "bob", PublicKey: officerkey.Authorized(bobKey.PublicKey())},
	}); err != nil {
		t.Fatal(err)
	}
	srv, err := newServer(ctx, cfg, db, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	restoreToken(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	base := "https://" + ln.Addr().String()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM)
	pair, _ := tls.X509KeyPair(cliCert, cliKey)
	client := func(tc *tls.Config) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
	}
	// alice logs in with her key (over the connection with her client
	// certificate) for the session she then presents.
	session := tlsLogin(t, client(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}}), base, "alice", aliceKey)
	get := func(c *http.Client, path string) (int, error) {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+session)
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	plain := client(&tls.Config{RootCAs: roots})
	withCert := client(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}})
	if code, err := get(plain, "/v1/health"); err != nil || code != 200 {
		t.Fatalf("health over TLS: %d %v", code, err)
	}
	if code, err := get(plain, "/v1/keys"); err != nil || code != 403 {
		t.Fatalf("officer endpoint without a client certificate: %d %v", code, err)
	}
	if code, err := get(withCert, "/v1/keys"); err != nil || code != 200 {
		t.Fatalf("officer endpoint with a client certificate: %d %v", code, err)
	}
	// A certificate from the same CA that is not the one bound to alice
	// does not carry her session, and bob, with no certificate bound,
	// cannot log in with one.
	otherPair, _ := tls.X509KeyPair(otherCert, otherKey)
	withOther := client(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{otherPair}})
	if code, err := get(withOther, "/v1/keys"); err != nil || code != 401 {
		t.Fatalf("alice's session over another officer's certificate: %d %v", code, err)
	}
	if code := tlsLoginCode(t, withOther, base, "bob", bobKey); code != http.StatusUnauthorized {
		t.Fatalf("bob logging in with a certificate not bound to him: %d", code)
	}
	if code := tlsLoginCode(t, withOther, base, "alice", aliceKey); code != http.StatusUnauthorized {
		t.Fatalf("alice logging in over another officer's certificate: %d", code)
	}
	old := client(&tls.Config{RootCAs: roots, MaxVersion: tls.VersionTLS11})
	if _, err := get(old, "/v1/health"); err == nil {
		t.Fatal("a TLS 1.1 client was served")
	}
	resp, err := http.Get("http://" + ln.Addr().String() + "/v1/health")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP served on the TLS port")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// tlsLogin logs officer in with key through c: a challenge, signed, for a
// session token.
func tlsLogin(t *testing.T, c *http.Client, base, officer string, key ssh.Signer) string {
	t.Helper()
	post := func(path string, body any, into any) {
		t.Helper()
		b, _ := json.Marshal(body)
		resp, err := c.Post(base+path, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, raw)
		}
		if err := json.Unmarshal(raw, into); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	var ch wire.LoginChallenge
	post("/v1/login/challenge", wire.LoginRequest{Officer: officer}, &ch)
	sig, err := officerkey.Sign(key, officerkey.DomainLogin, []byte(ch.Content))
	if err != nil {
		t.Fatal(err)
	}
	var sess wire.Session
	post("/v1/login", wire.LoginAnswer{ID: ch.ID, Signature: sig}, &sess)
	if sess.Token == "" || sess.Officer != officer {
		t.Fatalf("login of %s: %+v", officer, sess)
	}
	return sess.Token
}

// tlsLoginCode tries to log officer in with key through c and returns the
// status of the login itself.
func tlsLoginCode(t *testing.T, c *http.Client, base, officer string, key ssh.Signer) int {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"officer": officer})
	resp, err := c.Post(base+"/v1/login/challenge", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var ch struct{ ID, Content string }
	json.NewDecoder(resp.Body).Decode(&ch)
	resp.Body.Close()
	sig, err := officerkey.Sign(key, officerkey.DomainLogin, []byte(ch.Content))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = json.Marshal(map[string]any{"id": ch.ID, "signature": sig})
	resp, err = c.Post(base+"/v1/login", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
