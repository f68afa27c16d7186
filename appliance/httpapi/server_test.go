package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
	"github.com/keyrack/keyrack/hsm"
	"github.com/keyrack/keyrack/softhsm"
)

var (
	testTok *softhsm.Token
	testMod *hsm.Module
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	var cleanup func()
	var err error
	testTok, testMod, cleanup, err = softhsm.OpenTemp("appliance-test", func(c *hsm.Config) { c.RetryInterval = 100 * time.Millisecond })
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cleanup()
	return m.Run()
}

func newTestServer(t *testing.T) *httptest.Server {
	t.Helper()
	cfg, err := appliance.ParseConfig(strings.NewReader(fmt.Sprintf(
		`{"dev": true, "token": {"module": %q, "label": %q, "pin_file": %q}}`,
		testTok.Module, testTok.Label, testTok.PINFile)))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store.Path = filepath.Join(t.TempDir(), "keyrack.db")
	db, err := store.OpenSQLite(context.Background(), cfg.Store.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := newServer(context.Background(), cfg, db, log)
	if err != nil {
		t.Fatal(err)
	}
	restoreToken(t)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return ts
}

// newServer opens the core on the package's token and db, and puts the
// HTTP API in front of it.
func newServer(ctx context.Context, cfg appliance.Config, db *store.DB, log *slog.Logger) (*Server, error) {
	app, err := appliance.New(ctx, cfg, testMod, db, log)
	if err != nil {
		return nil, err
	}
	return New(app), nil
}

// restoreToken has the package's token lose, when t ends, every key made
// after this call (New has made the import key already), so the tests can
// run again in one process (go test -count): each test has a fresh store
// but shares the token, and key names are checked against both.
func restoreToken(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	before, err := testMod.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	had := map[string]bool{}
	for _, k := range before {
		had[string(k.ID)] = true
	}
	t.Cleanup(func() {
		after, err := testMod.ListKeys(ctx)
		if err != nil {
			// A test that took the token away may leave it recovering:
			// its keys stay, which only a repeated run would notice.
			t.Logf("keys made by the test not removed: %v", err)
			return
		}
		for _, k := range after {
			if !had[string(k.ID)] {
				if err := testMod.DestroyKey(ctx, k.ID); err != nil {
					t.Errorf("removing key %x made by the test: %v", k.ID, err)
				}
			}
		}
	})
}

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// TestHealthFollowsToken: health follows the token. Anyone learns up or
// down and a fixed reason word; an officer with a session, the details
// (the token's label, model and error).
func TestHealthFollowsToken(t *testing.T) {
	e := newCeremonyEnv(t, 2, "1h")
	ts := e.ts
	officerHealth := func() (int, wire.Health, string) {
		a := e.do("alice", "GET", "/v1/health", nil)
		var h wire.Health
		json.Unmarshal([]byte(a.Raw), &h)
		return a.Status, h, a.Raw
	}
	resp, body := get(t, ts.URL+"/v1/health")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || strings.TrimSpace(string(body)) != `{"status":"ok","reason":"ok"}` {
		t.Fatalf("health for anyone: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	code, h, raw := officerHealth()
	if code != 200 || h.Status != "ok" || !h.Token.Up || h.Token.Label != "appliance-test" || h.Token.Model != "SoftHSM v2" {
		t.Fatalf("health for an officer: %d %s", code, raw)
	}

	// Take the token's storage away: health must say 503 with a reason.
	tokens := filepath.Join(testTok.Dir, "tokens")
	if err := os.Rename(tokens, tokens+".away"); err != nil {
		t.Fatal(err)
	}
	defer os.Rename(tokens+".away", tokens)
	resp, body = get(t, ts.URL+"/v1/health")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		strings.TrimSpace(string(body)) != `{"status":"unavailable","reason":"token-unavailable"}` {
		t.Fatalf("health for anyone with the token gone: %d, Retry-After %q, %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	code, h, raw = officerHealth()
	if code != http.StatusServiceUnavailable || h.Status != "unavailable" || h.Token.Up || h.Token.Error == "" {
		t.Fatalf("health for an officer with the token gone: %d %s", code, raw)
	}
	for _, b := range []string{string(body), raw} {
		if strings.Contains(b, mustRead(t, testTok.PINFile)) {
			t.Fatal("health body carries the PIN")
		}
	}
	_, mbody := get(t, ts.URL+"/metrics")
	if !strings.Contains(string(mbody), "keyrack_token_up 0") {
		t.Fatal("metrics do not show the token down")
	}

	if err := os.Rename(tokens+".away", tokens); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, body = get(t, ts.URL+"/v1/health")
		if resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health did not come back: %s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, mbody = get(t, ts.URL+"/metrics")
	if !strings.Contains(string(mbody), "keyrack_token_up 1") {
		t.Fatal("metrics do not show the token up again")
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestErrorsAreJSON(t *testing.T) {
	ts := newTestServer(t)
	for _, tc := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/v1/no-such-thing", 404, "not-found"},
		{"DELETE", "/v1/health", 405, "method-not-allowed"},
	} {
		req, _ := http.NewRequest(tc.method, ts.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var eb wire.ErrorBody
		if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != "application/json" ||
			json.Unmarshal(b, &eb) != nil || eb.Error.Code != tc.code || eb.Error.Message == "" {
			t.Errorf("%s %s: %d %q %s", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), b)
		}
	}
}

func TestMetricsCountRequests(t *testing.T) {
	ts := newTestServer(t)
	get(t, ts.URL+"/v1/health")
	get(t, ts.URL+"/v1/nope")
	_, body := get(t, ts.URL+"/metrics")
	for _, want := range []string{
		`keyrack_http_requests_total{code="2xx",route="/v1/health"} 1`,
		`keyrack_http_requests_total{code="4xx",route="unmatched"} 1`,
		`keyrack_http_request_duration_seconds_count{route="/v1/health"} 1`,
		`keyrack_build_info{`,
		`keyrack_token_sessions `,
		`keyrack_token_recoveries_total `,
		"go_cpu_classes_gc_total_cpu_seconds_total ", // the GC's CPU, read by keyrack-bench
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestErrorMapping(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		retry  bool
	}{
		{fmt.Errorf("x: %w", hsm.ErrTokenUnavailable), 503, true},
		{fmt.Errorf("x: %w", hsm.ErrBusy), 503, true},
		{context.DeadlineExceeded, 503, true},
		{fmt.Errorf("x: %w", hsm.ErrKeyNotFound), 404, false},
		{fmt.Errorf("x: %w", hsm.ErrKeyExists), 409, false},
		{fmt.Errorf("plain"), 500, false},
		{fmt.Errorf("x: %w", store.ErrFailed), 503, false},
		// The core's own kinds, whatever their code (the signing paths'
		// classification is TestErrorKinds in the core).
		{&appliance.Error{Kind: appliance.BadInput, Code: "invalid-headers", Message: "m"}, 400, false},
		{&appliance.Error{Kind: appliance.Unauthenticated, Code: "unauthorized", Message: "m"}, 401, false},
		{&appliance.Error{Kind: appliance.Refused, Code: "key-not-active", Message: "m"}, 403, false},
		{&appliance.Error{Kind: appliance.NotFound, Code: "model-not-set-up", Message: "m"}, 404, false},
		{&appliance.Error{Kind: appliance.Conflict, Code: "serial-taken", Message: "m"}, 409, false},
		{&appliance.Error{Kind: appliance.RateLimited, Code: "rate-limited", Message: "m", RetryAfter: 1500 * time.Millisecond}, 429, true},
		{&appliance.Error{Kind: appliance.Unavailable, Code: "in-progress", Message: "m", RetryAfter: 2 * time.Second}, 503, true},
		{&appliance.Error{Kind: appliance.Overloaded, Code: "overloaded", Message: "m", RetryAfter: time.Second}, 503, true},
		{&appliance.Error{Kind: appliance.Internal, Code: "internal", Message: "internal error"}, 500, false},
	} {
		ae := toAPIError(tc.err)
		if ae.Status != tc.status || (ae.RetryAfter > 0) != tc.retry {
			t.Errorf("%v -> %d retry %d", tc.err, ae.Status, ae.RetryAfter)
		}
		if ae.Status == 500 && ae.Message != "internal error" {
			t.Errorf("a 500 leaks its cause: %q", ae.Message)
		}
	}
	// Retry-After is whole seconds, rounded up: never 0 for a delay.
	if ae := toAPIError(&appliance.Error{Kind: appliance.RateLimited, RetryAfter: 1500 * time.Millisecond}); ae.RetryAfter != 2 {
		t.Errorf("Retry-After for 1.5 s: %d", ae.RetryAfter)
	}
}
