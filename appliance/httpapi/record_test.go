package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
)

// holdWriter keeps the store's writer busy in an update of its own until
// the returned function is called (or the test ends), so that whatever
// writes next waits.
func holdWriter(t *testing.T, db *store.DB) (letGo func()) {
	t.Helper()
	entered, release := make(chan struct{}), make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- db.Update(context.Background(), func(*store.Tx) error {
			close(entered)
			<-release
			return nil
		})
	}()
	<-entered
	var once sync.Once
	letGo = func() {
		once.Do(func() {
			close(release)
			if err := <-held; err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(letGo)
	return letGo
}

// TestSignatureRecordedAfterClientLeaves: a caller that goes away after
// the token signed for it, while the signature waits to be recorded,
// leaves that signature in the signing log and the audit chain all the
// same. The store's writer is held busy so the record is still queued when
// the caller leaves.
func TestSignatureRecordedAfterClientLeaves(t *testing.T) {
	e := newDeviceEnv(t, false)
	e.ensureTemplate("line-1")
	ctx := context.Background()
	asJSON := func(v any) []byte { b, _ := json.Marshal(v); return b }
	var mc store.ModelConfig
	if err := e.db.View(ctx, func(tx *store.Tx) (err error) { mc, err = tx.GetModel("brand-x", "line-1"); return err }); err != nil {
		t.Fatal(err)
	}
	keyName := mc.Keys["model"] // newDeviceEnv's brand key
	cases := []struct {
		name, path, logType, action string
		body                        []byte
		officer                     bool
	}{
		{name: "model", path: "/v1/model", logType: "model", action: "model.sign",
			body: asJSON(map[string]any{"model": "line-1"})},
		{name: "system-user", path: "/v1/system-user", logType: "system-user", action: "system-user.sign",
			body: asJSON(map[string]any{"email": "ops@example.com", "username": "ops", "name": "Ops", "password": "pw-secret",
				"models": []string{"line-1"}, "serials": []string{"SN-1"}, "until": time.Now().AddDate(0, 1, 0)})},
		{name: "preseed", path: "/v1/preseed", logType: "preseed", action: "preseed.sign",
			body: asJSON(map[string]any{"model": "line-1", "system-label": "20261126", "artifact-sha3-384": "KPIl7M4vQ9d4AUjkoU41TGAwtOMLc_bWUCeW8AvdRWD4_xcP60Oo4ABs1No7BZsO",
				"snaps": []map[string]any{{"name": "pc", "id": "UqFziVZDHLSyO3TqSWgNBoAdHbLI4dAH", "revision": 145}}})},
		// The account-key-request an officer exports is audited, not
		// logged (it is not a device's assertion).
		{name: "account-key-request", path: "/v1/keys/" + keyName + "/export?account-id=brand-x", action: "key.export", officer: true},
	}
	logRows := func(typ string) int {
		if typ == "" {
			return 0
		}
		var n int
		if err := e.db.View(ctx, func(tx *store.Tx) error {
			rows, err := tx.SigningLog(store.LogFilter{Type: typ})
			n = len(rows)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	tokenSignatures := func() float64 {
		_, _, m := e.call("", "GET", "/metrics", "", nil, nil)
		return metricValue(t, m, `keyrack_token_sign_duration_seconds_count{result="ok"}`)
	}
	lastEvent := func() store.AuditEvent {
		var evs []store.AuditEvent
		e.db.View(ctx, func(tx *store.Tx) error { evs, _ = tx.AuditEvents(0, 100000); return nil })
		return evs[len(evs)-1]
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rowsBefore, signedBefore, eventsBefore := logRows(tc.logType), tokenSignatures(), lastEvent().Seq

			letGo := holdWriter(t, e.db)

			reqCtx, leave := context.WithCancel(ctx)
			defer leave()
			answered := make(chan error, 1)
			go func() {
				method, rd := "POST", bytes.NewReader(tc.body)
				if tc.body == nil {
					method = "GET"
				}
				req, _ := http.NewRequestWithContext(reqCtx, method, e.ts.URL+tc.path, rd)
				if tc.officer {
					req.Header.Set("Authorization", "Bearer "+e.creds["alice"])
				} else {
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("api-key", e.apiKeys["sign-a"])
				}
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					resp.Body.Close()
				}
				answered <- err
			}()
			// The token signs; the record then queues behind the held
			// writer.
			deadline := time.Now().Add(30 * time.Second)
			for tokenSignatures() == signedBefore {
				if time.Now().After(deadline) {
					t.Fatal("the token did not sign")
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond)
			leave()
			if err := <-answered; err == nil {
				t.Fatal("the request was answered while the store's writer was held")
			}
			// Give the server time to see the connection close (it
			// cancels the request's context then), then let the writer go.
			time.Sleep(200 * time.Millisecond)
			letGo()

			deadline = time.Now().Add(10 * time.Second)
			for lastEvent().Seq == eventsBefore {
				if time.Now().After(deadline) {
					t.Fatal("a signature the token made for a caller that left is not in the audit chain")
				}
				time.Sleep(20 * time.Millisecond)
			}
			ev := lastEvent()
			if ev.Action != tc.action || ev.Result != "ok" || ev.Seq != eventsBefore+1 {
				t.Fatalf("audit event: %+v (want one %s, ok)", ev, tc.action)
			}
			if tc.logType != "" {
				if n := logRows(tc.logType); n != rowsBefore+1 {
					t.Fatalf("signing log: %d %s rows after one signature (%d before)", n, tc.logType, rowsBefore)
				}
				if ev.Actor != "client:sign-a" || !strings.Contains(ev.Details, `"digest":`) {
					t.Fatalf("audit event: %+v (want the client and the digest)", ev)
				}
			}
			if _, err := e.db.VerifyAudit(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestOfficerReadsAreDurable: reading the audit chain or the signing log
// syncs the store (a reader may otherwise see a durable update's writes
// before they are durable; see store.DB.ViewDurable, whose order of read
// and sync TestViewDurable checks).
func TestOfficerReadsAreDurable(t *testing.T) {
	e := newCeremonyEnv(t, 2, "1h")
	// Let what the appliance writes as it starts settle.
	for last := e.db.LogSyncs(); ; {
		time.Sleep(300 * time.Millisecond)
		now := e.db.LogSyncs()
		if now == last {
			break
		}
		last = now
	}
	for _, path := range []string{"/v1/audit", "/v1/signing-log"} {
		before := e.db.LogSyncs()
		for i := 0; i < 3; i++ {
			if a := e.do("alice", "GET", path, nil); a.Status != http.StatusOK {
				t.Fatalf("%s: %d %s", path, a.Status, a.Raw)
			}
		}
		if n := e.db.LogSyncs() - before; n < 3 {
			t.Errorf("%s: %d log syncs for 3 reads; each must sync the store", path, n)
		}
	}
}

// TestStoreSyncFailure: when the store cannot make its write-ahead log
// durable (here the -wal file is moved away, so the sync cannot find it),
// a signature is not released, later writes are refused, and health says
// the store has failed.
func TestStoreSyncFailure(t *testing.T) {
	e := newDeviceEnv(t, false)
	e.ensureTemplate("line-1")
	wal := e.srv.cfg.Store.Path + "-wal"
	if err := os.Rename(wal, wal+".away"); err != nil {
		t.Fatal(err)
	}
	defer os.Rename(wal+".away", wal)
	body, _ := json.Marshal(map[string]any{"model": "line-1"})
	// The caller learns that the appliance is out of service, not why in
	// detail: the cause names files, which are for the operator.
	failed := func(what string, code int, hdr http.Header, raw []byte) {
		t.Helper()
		var b wire.ErrorBody
		if err := json.Unmarshal(raw, &b); err != nil || code != http.StatusServiceUnavailable || b.Error.Code != "store-failed" ||
			hdr.Get("Retry-After") != "" || strings.Contains(string(raw), wal) || strings.Contains(string(raw), "type: model") {
			t.Fatalf("%s: %d %v %s (want 503 store-failed, no Retry-After, no path, no assertion)", what, code, hdr, raw)
		}
	}
	code, hdr, raw := e.call("sign-a", "POST", "/v1/model", "application/json", body, nil)
	failed("model with the store failing", code, hdr, raw)
	code, hdr, raw = e.call("line-a", "POST", "/v1/request-id", "", nil, nil)
	failed("request-id after the store failed", code, hdr, raw)
	// An officer learns why; anyone else, a fixed word, without the
	// store's file.
	code, hdr, raw = e.call("", "GET", "/v1/health", "", nil, map[string]string{"Authorization": "Bearer " + e.creds["alice"]})
	var h wire.Health
	if err := json.Unmarshal(raw, &h); err != nil || code != http.StatusServiceUnavailable || h.Status != "unavailable" ||
		!strings.Contains(h.Store, "write-ahead log") || hdr.Get("Retry-After") != "" {
		t.Fatalf("health with the store failed: %d %v %s", code, hdr, raw)
	}
	code, hdr, raw = e.call("", "GET", "/v1/health", "", nil, nil)
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") != "" ||
		strings.TrimSpace(string(raw)) != `{"status":"unavailable","reason":"store-failed"}` || strings.Contains(string(raw), wal) {
		t.Fatalf("health for anyone with the store failed: %d %v %s", code, hdr, raw)
	}
}

// TestQueuePlaceFreedWhenTokenAnswers: a request gives its place in the
// signing queue back as soon as the token has answered it, not when its
// record is written and its answer sent, so that a slow store never holds
// the token back from the next request. The store's writer is held, so
// the signed model assertion waits for its record meanwhile.
func TestQueuePlaceFreedWhenTokenAnswers(t *testing.T) {
	e := newDeviceEnv(t, false)
	tokenSignatures := func() float64 {
		_, _, m := e.call("", "GET", "/metrics", "", nil, nil)
		return metricValue(t, m, `keyrack_token_sign_duration_seconds_count{result="ok"}`)
	}
	e.ensureTemplate("line-1")
	body, _ := json.Marshal(map[string]any{"model": "line-1"})
	// Warm the caches: the model's binding is read once, before the hold.
	if code, _, raw := e.call("sign-a", "POST", "/v1/model", "application/json", body, nil); code != 200 {
		t.Fatalf("model: %d %s", code, raw)
	}
	signedBefore := tokenSignatures()

	letGo := holdWriter(t, e.db)
	answered := make(chan int, 1)
	go func() {
		code, _, _ := e.call("sign-a", "POST", "/v1/model", "application/json", body, nil)
		answered <- code
	}()
	deadline := time.Now().Add(30 * time.Second)
	for tokenSignatures() == signedBefore {
		if time.Now().After(deadline) {
			t.Fatal("the token did not sign")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The signature is made and its record waits for the writer: the
	// request is not answered, and holds no place.
	time.Sleep(100 * time.Millisecond)
	taken, _ := e.srv.app.SigningQueue()
	select {
	case code := <-answered:
		t.Errorf("answered %d while its record could not be written", code)
	default:
	}
	letGo()
	if taken != 0 {
		t.Errorf("%d places in the signing queue taken while the signature waited for its record", taken)
	}
	if code := <-answered; code != 200 {
		t.Fatalf("model after the writer was let go: %d", code)
	}
}
