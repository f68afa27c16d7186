package appliance

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/keyrack/keyrack/appliance/officerkey"
	"github.com/keyrack/keyrack/appliance/wire"
)

// TestFailedLoginsAggregated: failed logins are audit events, one at once
// for a source's first failure in a window and one for the rest of that
// window, so a guesser (or a flood of bad session tokens) cannot flood
// the chain.
func TestFailedLoginsAggregated(t *testing.T) {
	e := newCoreEnv(t, func(c *Config) { c.Limits.AuthFailures = 1000 })
	ctx := context.Background()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	alice, _ := ssh.NewSignerFromKey(priv)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	mallory, _ := ssh.NewSignerFromKey(other)
	if err := BootstrapOfficers(ctx, e.db, []OfficerKey{{Name: "alice", PublicKey: officerkey.Authorized(alice.PublicKey())}}); err != nil {
		t.Fatal(err)
	}
	events := func() []wire.AuditEvent {
		evs, err := e.app.AuditEvents(ctx, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		var out []wire.AuditEvent
		for _, ev := range evs {
			if ev.Action == "officer.login" && ev.Result != "ok" {
				out = append(out, ev)
			}
		}
		return out
	}
	fail := func(source string) {
		t.Helper()
		ch, err := e.app.LoginChallenge(ctx, wire.LoginRequest{Officer: "alice"}, source)
		if err != nil {
			t.Fatal(err)
		}
		sig, _ := officerkey.Sign(mallory, officerkey.DomainLogin, []byte(ch.Content))
		if _, err := e.app.Login(ctx, wire.LoginAnswer{ID: ch.ID, Signature: sig}, source, ""); !errors.Is(err, errLoginFailed) {
			t.Fatalf("mallory's login: %v", err)
		}
	}
	for i := 0; i < 20; i++ {
		fail("192.0.2.1")
	}
	fail("192.0.2.2")
	for i := 0; i < 5; i++ {
		if _, err := e.app.AuthenticateOfficer(ctx, "krk_s_nonsense", "192.0.2.3", ""); err == nil {
			t.Fatal("a bad session token was accepted")
		}
	}
	if evs := events(); len(evs) != 3 {
		t.Fatalf("%d events at once for 3 sources, want 3: %+v", len(evs), evs)
	}
	e.app.flushLoginFailures(ctx)
	evs := events()
	if len(evs) != 5 {
		t.Fatalf("%d events after the window, want 5 (3 first failures, 2 summaries): %+v", len(evs), evs)
	}
	var more map[string]float64 = map[string]float64{}
	for _, ev := range evs[3:] {
		var d struct {
			Source string  `json:"source"`
			More   float64 `json:"more_failures"`
		}
		json.Unmarshal(ev.Details, &d)
		more[d.Source] = d.More
	}
	if more["192.0.2.1"] != 19 || more["192.0.2.3"] != 4 {
		t.Fatalf("summaries %v", more)
	}
	// A good login still works, and is itself recorded.
	ch, _ := e.app.LoginChallenge(ctx, wire.LoginRequest{Officer: "alice"}, "192.0.2.9")
	sig, _ := officerkey.Sign(alice, officerkey.DomainLogin, []byte(ch.Content))
	if _, err := e.app.Login(ctx, wire.LoginAnswer{ID: ch.ID, Signature: sig}, "192.0.2.9", ""); err != nil {
		t.Fatal(err)
	}
}

// TestChallengesBoundedPerSource: one address cannot take every login
// challenge; another address still gets one.
func TestChallengesBoundedPerSource(t *testing.T) {
	e := newCoreEnv(t)
	ctx := context.Background()
	var err error
	n := 0
	for ; n < 2*challengesPerSource; n++ {
		if _, err = e.app.LoginChallenge(ctx, wire.LoginRequest{Officer: "alice"}, "192.0.2.1"); err != nil {
			break
		}
	}
	if n != challengesPerSource || AsError(err).Kind != RateLimited {
		t.Fatalf("%d challenges for one source, then %v", n, err)
	}
	if _, err := e.app.LoginChallenge(ctx, wire.LoginRequest{Officer: "alice"}, "192.0.2.2"); err != nil {
		t.Fatalf("another source: %v", err)
	}
}
