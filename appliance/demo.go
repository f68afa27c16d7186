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
	demoRoleJSON = `[{"type": "serial", "models": ["dev-model"]}, {"type": "model", "models": ["dev-model"]}]`
)

// EnsureDemo sets up a development appliance's demo data in devDir on
// first start: an officer whose credential is written to
// devDir/officer-token (mode 0600) and a serial-signing key generated in the
// token through the same ceremony production uses (with quorum 1). A
// restart finds them and changes nothing.
func (s *Server) EnsureDemo(ctx context.Context, devDir string) error {
	if !s.cfg.Dev {
		return errors.New("demo data only on a dev appliance")
	}
	tokenFile := filepath.Join(devDir, "officer-token")
	creds, err := BootstrapOfficers(ctx, s.db, []string{DemoOfficer})
	switch {
	case err == nil:
		if err := writeSecretFile(tokenFile, creds[DemoOfficer]); err != nil {
			return err
		}
		s.log.Info("demo officer created", "officer", DemoOfficer, "credential_file", tokenFile)
	case errors.Is(err, ErrOfficersExist):
	default:
		return err
	}
	var k store.Key
	err = s.db.View(ctx, func(tx *store.Tx) error {
		var err error
		k, err = tx.GetKey(DemoKey)
		return err
	})
	if err == nil && k.State == store.KeyActive {
		s.log.Info("demo data", "serial_key", DemoKey, "key_id", k.KeyID, "created", false)
		return nil
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	out, err := s.propose(ctx, DemoOfficer, KindKeyGenerate, "generate the demo serial key",
		keyPayload{Name: DemoKey, Roles: json.RawMessage(demoRoleJSON)})
	if err != nil {
		return fmt.Errorf("demo key: %w", err)
	}
	err = s.db.View(ctx, func(tx *store.Tx) error {
		var err error
		k, err = tx.GetKey(DemoKey)
		return err
	})
	if err != nil {
		return err
	}
	s.log.Info("demo data", "serial_key", DemoKey, "key_id", k.KeyID, "created", true, "proposal", out.Proposal.ID)
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
