package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/store"
)

// refusalEvents returns the chain's signing.refused events.
func (e *ceremonyEnv) refusalEvents() []store.AuditEvent {
	e.t.Helper()
	var evs, out []store.AuditEvent
	if err := e.db.View(context.Background(), func(tx *store.Tx) (err error) { evs, err = tx.AuditEvents(0, 10000); return err }); err != nil {
		e.t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Action == "signing.refused" {
			out = append(out, ev)
		}
	}
	return out
}

type refusalDetails struct {
	Rule    string   `json:"rule"`
	Client  string   `json:"client"`
	Type    string   `json:"type"`
	Source  string   `json:"source"`
	More    int      `json:"more_refusals"`
	Clients []string `json:"clients"`
	Types   []string `json:"types"`
}

func details(t *testing.T, ev store.AuditEvent) refusalDetails {
	t.Helper()
	var d refusalDetails
	if err := json.Unmarshal([]byte(ev.Details), &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestStoppedKeyAndClientRefusalsVisible plays a factory line that keeps
// asking after the officers froze its key, then after they revoked its
// client: every refusal counts in keyrack_signing_refusals_total by rule,
// and the chain gets one event at once and, at the window's end, one
// event with the count of the rest: 500 refusals of one key in a window
// are 2 events, 50 of one revoked client 2 more. A wrong key for a
// client's name is not a revoked client's refusal, and no event holds
// the API key.
func TestStoppedKeyAndClientRefusalsVisible(t *testing.T) {
	e := newDeviceEnv(t, false, func(c *appliance.Config) { c.Limits.AuthFailures = 10000 })
	ctx := context.Background()
	model := []byte(`{"model": "line-1"}`)
	e.modelAssertion("line-1") // signs: the line works
	key := mustModelKey(t, e, "line-1")
	if a := e.do("alice", "POST", "/v1/keys/"+key+"/freeze", nil); a.Status != http.StatusOK {
		t.Fatalf("freeze: %d %s", a.Status, a.Raw)
	}
	metric := func(rule string) float64 {
		t.Helper()
		_, _, m := e.call("", "GET", "/metrics", "", nil, nil)
		return metricValue(t, m, `keyrack_signing_refusals_total{rule="`+rule+`"}`)
	}
	for i := 0; i < 500; i++ {
		code, _, raw := e.call("sign-a", "POST", "/v1/model", "application/json", model, nil)
		if code != http.StatusForbidden || errCodeOf(raw) != "key-not-active" {
			t.Fatalf("refusal %d: %d %s", i, code, raw)
		}
	}
	if n := metric("key-disabled"); n != 500 {
		t.Fatalf("keyrack_signing_refusals_total{rule=key-disabled} %v, want 500", n)
	}
	evs := e.refusalEvents()
	if len(evs) != 1 || evs[0].Subject != key || evs[0].Actor != "client:sign-a" || evs[0].Result != "refused: key-disabled" {
		t.Fatalf("%d events at once, want 1 (the first: %+v)", len(evs), evs[:min(len(evs), 1)])
	}
	if d := details(t, evs[0]); d.Rule != "key-disabled" || d.Client != "sign-a" || d.Type != "model" {
		t.Fatalf("the first event's details: %s", evs[0].Details)
	}
	e.srv.app.FlushAuditAggregates(ctx)
	evs = e.refusalEvents()
	if len(evs) != 2 || evs[1].Actor != "system" || evs[1].Subject != key {
		t.Fatalf("%d events after the window, want 2", len(evs))
	}
	if d := details(t, evs[1]); d.More != 499 || strings.Join(d.Clients, ",") != "sign-a" || strings.Join(d.Types, ",") != "model" {
		t.Fatalf("the window's event: %s", evs[1].Details)
	}
	// Nothing more to say for a window without refusals; the next
	// window's first refusal is an event at once again.
	e.srv.app.FlushAuditAggregates(ctx)
	if evs = e.refusalEvents(); len(evs) != 2 {
		t.Fatalf("an empty window added events: %+v", evs[2:])
	}
	e.call("sign-a", "POST", "/v1/model", "application/json", model, nil)
	if evs = e.refusalEvents(); len(evs) != 3 || details(t, evs[2]).More != 0 {
		t.Fatalf("the next window's first refusal: %d events, want 3", len(evs))
	}

	// The revoked client, with its own key.
	if a := e.do("alice", "POST", "/v1/clients/sign-a/revoke", nil); a.Status != http.StatusOK {
		t.Fatalf("revoke: %d %s", a.Status, a.Raw)
	}
	for i := 0; i < 50; i++ {
		if code, _, raw := e.call("sign-a", "POST", "/v1/model", "application/json", model, nil); code != http.StatusUnauthorized {
			t.Fatalf("a revoked client: %d %s", code, raw)
		}
	}
	// Someone guessing at the name: a wrong key, not counted as the
	// revoked client's.
	wrong := e.apiKeys["sign-a"][:len(e.apiKeys["sign-a"])-4] + "0000"
	code, _, _ := e.call("", "POST", "/v1/model", "application/json", model, map[string]string{"api-key": wrong})
	if code != http.StatusUnauthorized {
		t.Fatalf("a wrong key: %d", code)
	}
	if n := metric("client-revoked"); n != 50 {
		t.Fatalf("keyrack_signing_refusals_total{rule=client-revoked} %v, want 50", n)
	}
	e.srv.app.FlushAuditAggregates(ctx)
	evs = e.refusalEvents()
	if len(evs) != 5 {
		t.Fatalf("%d events, want 5", len(evs))
	}
	first, window := evs[3], evs[4]
	if first.Subject != "sign-a" || first.Result != "refused: client-revoked" || details(t, first).Source == "" ||
		window.Subject != "sign-a" || details(t, window).More != 49 {
		t.Fatalf("the revoked client's events: %+v", evs[3:])
	}
	for _, ev := range evs {
		if strings.Contains(ev.Details, "krk_c_") || strings.Contains(ev.Subject, "krk_c_") {
			t.Fatalf("an event holds an API key: %+v", ev)
		}
	}
	if n := metric("key-destroyed"); n != 0 {
		t.Fatalf("key-destroyed %v", n)
	}
}
