package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance/store"
)

// TestTokenGoesAwayUnderLoad moves the token's storage away while devices
// ask for serials: requests get 503 + Retry-After quickly, health says why,
// nothing hangs, and serials flow again once the token is back, without a
// restart.
func TestTokenGoesAwayUnderLoad(t *testing.T) {
	e := newDeviceEnv(t, false)
	model := e.modelAssertion("line-1")
	var seq atomic.Int64
	next := func() []byte {
		return stream(newDevice(t).serialRequest(t, e.requestID("line-a"), "line-1", fmt.Sprintf("TF-%d", seq.Add(1)), nil), model)
	}
	// Prepare requests first: device keys are slow to make.
	var bodies [][]byte
	for i := 0; i < 24; i++ {
		bodies = append(bodies, next())
	}
	tokens := filepath.Join(testTok.Dir, "tokens")
	if err := os.Rename(tokens, tokens+".away"); err != nil {
		t.Fatal(err)
	}
	restored := false
	defer func() {
		if !restored {
			os.Rename(tokens+".away", tokens)
		}
	}()

	var wg sync.WaitGroup
	var slow atomic.Int64
	statuses := make([]int, 16)
	for i := range statuses {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			start := time.Now()
			code, hdr, raw := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, bodies[i], nil)
			if time.Since(start) > time.Second {
				slow.Add(1)
			}
			statuses[i] = code
			if code == http.StatusServiceUnavailable && (hdr.Get("Retry-After") == "" || hdr.Get("Content-Type") != "application/json") {
				t.Errorf("503 without Retry-After or JSON: %v %s", hdr, raw)
			}
		}(i)
	}
	wg.Wait()
	unavailable := 0
	for _, c := range statuses {
		if c == http.StatusServiceUnavailable {
			unavailable++
		} else if c != 200 {
			t.Errorf("status %d with the token gone (want 503, or 200 for a signature already under way)", c)
		}
	}
	if unavailable < len(statuses)-2 || slow.Load() > 0 {
		t.Fatalf("token gone: %d of %d answered 503, %d took over a second: %v", unavailable, len(statuses), slow.Load(), statuses)
	}
	// Each serial the token failed is audited as failed, with no digest
	// (no signature exists), and its reservation given back.
	var evs []store.AuditEvent
	e.db.View(context.Background(), func(tx *store.Tx) error { evs, _ = tx.AuditEvents(0, 100000); return nil })
	failed := 0
	for _, ev := range evs {
		if ev.Action == "serial.sign" && strings.HasPrefix(ev.Result, "failed: ") {
			failed++
			if ev.Details != "{}" {
				t.Errorf("failed serial audited with details %s", ev.Details)
			}
		}
	}
	if failed == 0 {
		t.Errorf("no failed serial in the audit chain after %d refusals", unavailable)
	}
	resp, body := get(t, e.ts.URL+"/v1/health")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `"reason":"token-unavailable"`) {
		t.Fatalf("health with the token gone: %d %s", resp.StatusCode, body)
	}

	if err := os.Rename(tokens+".away", tokens); err != nil {
		t.Fatal(err)
	}
	restored = true
	deadline := time.Now().Add(10 * time.Second)
	for i := 16; ; i++ {
		if i >= len(bodies) {
			bodies = append(bodies, next())
		}
		code, _, raw := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, bodies[i], nil)
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serials did not resume after the token came back: %d %s", code, raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
