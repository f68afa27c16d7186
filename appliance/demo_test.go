package appliance

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/keyrack/keyrack/appliance/officerkey"
	"github.com/keyrack/keyrack/appliance/store"
)

// TestDemoClientsOfEachKind: a dev appliance's first start makes the
// device-service client dev-line (var/dev/api-key) and the signing client
// dev-signer (var/dev/signing-key), each key in its own file of mode
// 0600; a second start changes nothing; a dev directory made before
// clients had kinds (dev-line and its key, no signer) gets dev-signer and
// keeps its api-key.
func TestDemoClientsOfEachKind(t *testing.T) {
	ctx := context.Background()
	check := func(t *testing.T, e *coreEnv, dir string) {
		t.Helper()
		for name, kind := range map[string]string{DemoClient: "device-service", DemoSigner: "signing"} {
			var c store.Client
			if err := e.db.View(ctx, func(tx *store.Tx) (err error) { c, err = tx.GetClientByName(name); return err }); err != nil {
				t.Fatal(err)
			}
			if c.Kind != kind {
				t.Errorf("%s is %q, want %s", name, c.Kind, kind)
			}
		}
		for _, f := range []string{"api-key", "signing-key"} {
			st, err := os.Stat(filepath.Join(dir, f))
			if err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("%s: %v %v", f, st, err)
			}
		}
		for token, want := range map[string]ClientKind{read(t, dir, "api-key"): DeviceServiceClient, read(t, dir, "signing-key"): SigningClient} {
			if _, err := e.app.AuthenticateClient(ctx, token, "127.0.0.1", want, ""); err != nil {
				t.Errorf("the %s key: %v", want, err)
			}
		}
	}
	// One appliance (the token holds one dev-serial): a dev directory as
	// a start before clients had kinds left it (the store migration made
	// its dev-line a device-service client), then the start after, then
	// another.
	e, dir := newCoreEnv(t, func(c *Config) { c.Officers.Quorum = 1 }), t.TempDir()
	signer, pub, err := demoOfficerKey(filepath.Join(dir, "officer-key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := BootstrapOfficers(ctx, e.db, []OfficerKey{{Name: DemoOfficer, PublicKey: pub}}); err != nil {
		t.Fatal(err)
	}
	if err := e.app.demoKeyAndLine(ctx, dir, func(kind, summary string, payload any) (Outcome, error) {
		out, err := e.app.propose(ctx, DemoOfficer, kind, summary, payload)
		if err != nil {
			return out, err
		}
		sig, _ := officerkey.Sign(signer, officerkey.DomainApproval, []byte(out.Proposal.Content))
		return e.app.approve(ctx, DemoOfficer, out.Proposal.ID, sig)
	}); err != nil {
		t.Fatal(err)
	}
	apiKey := read(t, dir, "api-key")
	if err := e.app.EnsureDemo(ctx, dir); err != nil {
		t.Fatal(err)
	}
	check(t, e, dir)
	if read(t, dir, "api-key") != apiKey {
		t.Fatal("the gadget's api-key changed")
	}
	signingKey := read(t, dir, "signing-key")
	if err := e.app.EnsureDemo(ctx, dir); err != nil {
		t.Fatal(err)
	}
	check(t, e, dir)
	if read(t, dir, "api-key") != apiKey || read(t, dir, "signing-key") != signingKey {
		t.Fatal("a second start changed the keys")
	}
}

func read(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b[:len(b)-1])
}
