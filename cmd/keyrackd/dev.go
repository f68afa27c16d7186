package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/softhsm"
)

const devTokenLabel = "keyrack-dev"

// prepareDev makes (on first start) or finds (afterwards) the development
// appliance in dir: a SoftHSM token, and a configuration file that points
// at it. It returns the configuration's path. The daemon then starts from
// that file exactly as in production, so dev exercises the real path.
func prepareDev(dir, listen string, log *slog.Logger) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	tok, created, err := softhsm.Ensure(filepath.Join(dir, "softhsm"), devTokenLabel)
	if err != nil {
		return "", err
	}
	log.Info("dev token", "dir", tok.Dir, "label", tok.Label, "created", created)

	path := filepath.Join(dir, "keyrackd.json")
	if _, err := os.Stat(path); err == nil {
		if listen != "" {
			log.Warn("-listen ignored: the dev configuration exists; edit it instead", "config", path)
		}
		return path, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if listen == "" {
		listen = "127.0.0.1:8080"
	}
	stateDir, err := filepath.Abs(filepath.Join(dir, "state"))
	if err != nil {
		return "", err
	}
	cfg := appliance.Config{
		Listen:   listen,
		StateDir: stateDir,
		Dev:      true,
		// One officer approves alone on a dev appliance; production
		// refuses a quorum below 2.
		Officers: appliance.OfficersConfig{Quorum: 1},
		Token: appliance.TokenConfig{
			Module:  tok.Module,
			Label:   tok.Label,
			PINFile: tok.PINFile,
		},
	}
	if err := cfg.Normalize(); err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	log.Info("wrote dev configuration", "config", path)
	return path, nil
}
