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
	DemoClient   = "dev-line"   // device-service: its key is the gadget's, in var/dev/api-key
	DemoSigner   = "dev-signer" // signing: its key is a secret, in var/dev/signing-key
	demoRoleJSON = `[{"type": "serial", "models": ["dev-model"]}, {"type": "model", "models": ["dev-model"]},
		{"type": "system-user", "models": ["dev-model"]}, {"type": "preseed", "models": ["dev-model"]}]`
)

// EnsureDemo sets up a development appliance's demo data in devDir on
// first start, through the same ceremonies production uses (quorum 1): an
// officer (key in devDir/officer-key), a signing key generated in
// the token, the model dev-brand/dev-model bound to it with serials
// assigned by the appliance, and one client of each kind for that model:
// the device-service client dev-line (key in devDir/api-key, the one a
// gadget carries) and the signing client dev-signer (key in
// devDir/signing-key). Files are mode 0600. A restart changes nothing; a
// dev directory made before clients had kinds gets dev-signer on its next
// start (its dev-line became a device-service client when the store was
// migrated).
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
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	created := err != nil || k.State != store.KeyActive
	if created {
		if err := a.demoKeyAndLine(ctx, devDir, ceremony); err != nil {
			return err
		}
		if k, err = a.keyRecord(ctx, DemoKey); err != nil {
			return err
		}
	}
	// A dev appliance made before model templates gets its one now.
	if err := a.ensureDemoTemplate(ctx, ceremony); err != nil {
		return err
	}
	signingKeyFile, err := a.demoSigner(ctx, devDir, ceremony)
	if err != nil {
		return err
	}
	a.log.Info("demo data", "serial_key", DemoKey, "key_id", k.KeyID, "created", created, "brand", DemoBrand, "model", DemoModel,
		"device_service_client", DemoClient, "api_key_file", filepath.Join(devDir, "api-key"),
		"signing_client", DemoSigner, "signing_key_file", signingKeyFile)
	return nil
}

type demoCeremony func(kind, summary string, payload any) (Outcome, error)

// demoKeyAndLine makes the demo key, binds the demo model to it and
// creates the device-service client dev-line, whose key goes where a
// gadget's would: devDir/api-key.
func (a *Appliance) demoKeyAndLine(ctx context.Context, devDir string, ceremony demoCeremony) error {
	if _, err := ceremony(KindKeyGenerate, "generate the demo key",
		keyPayload{Name: DemoKey, Roles: json.RawMessage(demoRoleJSON)}); err != nil {
		return fmt.Errorf("demo key: %w", err)
	}
	keys := map[string]string{"serial": DemoKey, "model": DemoKey, "system-user": DemoKey, "preseed": DemoKey}
	if _, err := ceremony(KindModelSet, "bind the demo model",
		modelPayload{Brand: DemoBrand, Model: DemoModel, Keys: keys, SerialSource: "assign", SerialPrefix: "dev-"}); err != nil {
		return fmt.Errorf("demo model: %w", err)
	}
	line := clientPayload{Name: DemoClient, Kind: string(DeviceServiceClient), Brand: DemoBrand, Models: []string{DemoModel},
		Types: []string{"serial"}}
	out, err := ceremony(KindClientCreate, clientSummary(line), line)
	if err != nil {
		return fmt.Errorf("demo device-service client: %w", err)
	}
	return writeSecretFile(filepath.Join(devDir, "api-key"), out.Credential)
}

// demoSigner creates the signing client dev-signer, with the default
// limits, unless it exists, and returns the file of its key.
func (a *Appliance) demoSigner(ctx context.Context, devDir string, ceremony demoCeremony) (string, error) {
	file := filepath.Join(devDir, "signing-key")
	err := a.db.View(ctx, func(tx *store.Tx) error {
		_, err := tx.GetClientByName(DemoSigner)
		return err
	})
	switch {
	case err == nil:
		if _, serr := os.Stat(file); serr != nil {
			// The appliance keeps only the key's hash: it cannot write it
			// again.
			a.log.Warn("the demo signing client exists but its key file is missing: revoke it and delete var/dev to start over",
				"signing_client", DemoSigner, "signing_key_file", file)
		}
		return file, nil
	case !errors.Is(err, store.ErrNotFound):
		return "", err
	}
	models := []string{DemoModel}
	l := defaultLimits(models)
	p := clientPayload{Name: DemoSigner, Kind: string(SigningClient), Brand: DemoBrand, Models: models,
		Types: []string{"model", "system-user", "preseed"}, Limits: &l}
	out, err := ceremony(KindClientCreate, clientSummary(p), p)
	if err != nil {
		return "", fmt.Errorf("demo signing client: %w", err)
	}
	return file, writeSecretFile(file, out.Credential)
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
