package appliance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/keyrack/keyrack/appliance/officerkey"
	"github.com/keyrack/keyrack/appliance/store"
	"golang.org/x/crypto/ssh"
)

// Demo data of a development appliance.
const (
	DemoOfficer  = "dev-officer"
	DemoKey      = "dev-serial"
	DemoBrand    = "dev-brand"
	DemoModel    = "dev-model"
	DemoClient   = "dev-line"
	demoRoleJSON = `[{"type": "serial", "models": ["dev-model"]}, {"type": "model", "models": ["dev-model"]},
		{"type": "system-user", "models": ["dev-model"]}, {"type": "preseed", "models": ["dev-model"]}]`
)

// EnsureDemo sets up a development appliance's demo data in devDir on
// first start, through the same ceremonies production uses (quorum 1): an
// officer (key in devDir/officer-key), a signing key generated in
// the token, the model dev-brand/dev-model bound to it with serials
// assigned by the appliance, and an API client for that model (key in
// devDir/api-key). Files are mode 0600. A restart changes nothing.
func (a *Appliance) EnsureDemo(ctx context.Context, devDir string) error {
	if !a.cfg.Dev {
		return errors.New("demo data only on a dev appliance")
	}
	signer, pub, err := demoOfficerKey(filepath.Join(devDir, "officer-key"))
	if err != nil {
		return err
	}
	switch err := BootstrapOfficers(ctx, a.db, []OfficerKey{{Name: DemoOfficer, PublicKey: pub}}); {
	case err == nil:
		a.log.Info("demo officer created", "officer", DemoOfficer, "key_file", filepath.Join(devDir, "officer-key"))
	case errors.Is(err, ErrOfficersExist):
	default:
		return err
	}
	// The same ceremonies as production, each signed by the demo officer's
	// key (a dev appliance runs with quorum 1).
	ceremony := func(kind, summary string, payload any) (Outcome, error) {
		out, err := a.propose(ctx, DemoOfficer, kind, summary, payload)
		if err != nil {
			return out, err
		}
		sig, err := officerkey.Sign(signer, officerkey.DomainApproval, []byte(out.Proposal.Content))
		if err != nil {
			return out, err
		}
		return a.approve(ctx, DemoOfficer, out.Proposal.ID, sig)
	}
	k, err := a.keyRecord(ctx, DemoKey)
	if err == nil && k.State == store.KeyActive {
		a.log.Info("demo data", "serial_key", DemoKey, "key_id", k.KeyID, "created", false)
		// A dev appliance made before model templates gets its one now.
		return a.ensureDemoTemplate(ctx, ceremony)
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if _, err := ceremony(KindKeyGenerate, "generate the demo key",
		keyPayload{Name: DemoKey, Roles: json.RawMessage(demoRoleJSON)}); err != nil {
		return fmt.Errorf("demo key: %w", err)
	}
	keys := map[string]string{"serial": DemoKey, "model": DemoKey, "system-user": DemoKey, "preseed": DemoKey}
	if _, err := ceremony(KindModelSet, "bind the demo model",
		modelPayload{Brand: DemoBrand, Model: DemoModel, Keys: keys, SerialSource: "assign", SerialPrefix: "dev-"}); err != nil {
		return fmt.Errorf("demo model: %w", err)
	}
	if err := a.ensureDemoTemplate(ctx, ceremony); err != nil {
		return err
	}
	out, err := ceremony(KindClientCreate, "create the demo API client",
		clientPayload{Name: DemoClient, Brand: DemoBrand, Models: []string{DemoModel}, Types: []string{"serial", "model", "system-user", "preseed"}})
	if err != nil {
		return fmt.Errorf("demo client: %w", err)
	}
	apiKeyFile := filepath.Join(devDir, "api-key")
	if err := writeSecretFile(apiKeyFile, out.Credential); err != nil {
		return err
	}
	if k, err = a.keyRecord(ctx, DemoKey); err != nil {
		return err
	}
	a.log.Info("demo data", "serial_key", DemoKey, "key_id", k.KeyID, "created", true, "brand", DemoBrand, "model", DemoModel,
		"api_client", DemoClient, "api_key_file", apiKeyFile)
	return nil
}

// demoOfficerKey reads the demo officer's key file, or makes it (mode
// 0600, no passphrase, with FILE.pub beside it) on the first start, as
// `keyrack officer keygen` would. It returns the signer and the public key.
func demoOfficerKey(path string) (ssh.Signer, string, error) {
	priv, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		var pub []byte
		if priv, pub, err = officerkey.Generate(DemoOfficer, nil); err != nil {
			return nil, "", err
		}
		if err := writeSecretFile(path, strings.TrimSpace(string(priv))); err != nil {
			return nil, "", err
		}
		if err := os.WriteFile(path+".pub", pub, 0o644); err != nil {
			return nil, "", err
		}
	} else if err != nil {
		return nil, "", err
	}
	signer, err := officerkey.LoadSigner(priv, nil)
	clear(priv)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	return signer, officerkey.Authorized(signer.PublicKey()), nil
}

func writeSecretFile(path, secret string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(secret + "\n"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
