package appliance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/keyrack/keyrack/appliance/store"
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
// officer (credential in devDir/officer-token), a signing key generated in
// the token, the model dev-brand/dev-model bound to it with serials
// assigned by the appliance, and an API client for that model (key in
// devDir/api-key). Files are mode 0600. A restart changes nothing.
func (a *Appliance) EnsureDemo(ctx context.Context, devDir string) error {
	if !a.cfg.Dev {
		return errors.New("demo data only on a dev appliance")
	}
	tokenFile := filepath.Join(devDir, "officer-token")
	creds, err := BootstrapOfficers(ctx, a.db, []string{DemoOfficer})
	switch {
	case err == nil:
		if err := writeSecretFile(tokenFile, creds[DemoOfficer]); err != nil {
			return err
		}
		a.log.Info("demo officer created", "officer", DemoOfficer, "credential_file", tokenFile)
	case errors.Is(err, ErrOfficersExist):
	default:
		return err
	}
	k, err := a.keyRecord(ctx, DemoKey)
	if err == nil && k.State == store.KeyActive {
		a.log.Info("demo data", "serial_key", DemoKey, "key_id", k.KeyID, "created", false)
		return nil
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if _, err := a.propose(ctx, DemoOfficer, KindKeyGenerate, "generate the demo key",
		keyPayload{Name: DemoKey, Roles: json.RawMessage(demoRoleJSON)}); err != nil {
		return fmt.Errorf("demo key: %w", err)
	}
	keys := map[string]string{"serial": DemoKey, "model": DemoKey, "system-user": DemoKey, "preseed": DemoKey}
	if _, err := a.propose(ctx, DemoOfficer, KindModelSet, "bind the demo model",
		modelPayload{Brand: DemoBrand, Model: DemoModel, Keys: keys, SerialSource: "assign", SerialPrefix: "dev-"}); err != nil {
		return fmt.Errorf("demo model: %w", err)
	}
	out, err := a.propose(ctx, DemoOfficer, KindClientCreate, "create the demo API client",
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
