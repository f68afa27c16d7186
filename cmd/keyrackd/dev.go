package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/softhsm"
)

const devTokenLabel = "keyrack-dev"

// Where the dev token lives (-dev-token).
const (
	devTokenInProcess = "inprocess" // libsofthsm2.so loaded by keyrackd
	devTokenRemote    = "remote"    // p11-kit-server in its own process
)

// devSetup is a prepared development appliance.
type devSetup struct {
	config string // the configuration file's path
	// module, when set, replaces token.module of the configuration: the
	// same token reached another way (p11-kit-client.so).
	module string
	// stop ends the token process of a remote dev token (nil otherwise).
	stop func()
}

// prepareDev makes (on first start) or finds (afterwards) the development
// appliance in dir: a SoftHSM token, and a configuration file that points
// at it. The daemon then starts from that file exactly as in production,
// so dev exercises the real path.
//
// With tokenMode remote, the token is served by p11-kit-server, a child
// process started here with the socket in dir/p11-kit (mode 0700), and
// keyrackd loads p11-kit-client.so instead of SoftHSM: the keys are then
// decrypted in the token's process only. A token still to be made is made
// by a short-lived keyrackd child (-dev-make-token), because initializing
// it loads libsofthsm2.so, which this process must never map.
func prepareDev(dir, listen, tokenMode string, log *slog.Logger) (devSetup, error) {
	var setup devSetup
	if tokenMode != devTokenInProcess && tokenMode != devTokenRemote {
		return setup, fmt.Errorf("-dev-token %q: want %s or %s", tokenMode, devTokenInProcess, devTokenRemote)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return setup, err
	}
	tokDir := filepath.Join(dir, "softhsm")
	var tok *softhsm.Token
	var created bool
	var err error
	if tokenMode == devTokenRemote {
		tok, created, err = ensureTokenInChild(tokDir)
	} else {
		tok, created, err = softhsm.Ensure(tokDir, devTokenLabel)
	}
	if err != nil {
		return setup, err
	}
	log.Info("dev token", "dir", tok.Dir, "label", tok.Label, "created", created, "where", tokenMode)
	if tokenMode == devTokenRemote {
		// keyrackd needs no SoftHSM configuration: only the server reads
		// the token's files.
		os.Unsetenv("SOFTHSM2_CONF")
		srv, err := softhsm.Serve(tok, filepath.Join(dir, "p11-kit", "token.sock"))
		if err != nil {
			return setup, err
		}
		if err := os.Setenv(softhsm.ClientAddressEnv, srv.Address()); err != nil {
			srv.Kill()
			return setup, err
		}
		log.Info("dev token served by p11-kit-server", "pid", srv.PID(), "socket", srv.Socket, "client", srv.Client)
		setup.module, setup.stop = srv.Client, srv.Kill
	}
	setup.config, err = devConfig(dir, listen, tok, log)
	if err != nil && setup.stop != nil {
		setup.stop()
	}
	return setup, err
}

// ensureTokenInChild finds the dev token in dir, or has a child keyrackd
// make it (see prepareDev).
func ensureTokenInChild(dir string) (*softhsm.Token, bool, error) {
	tok, err := softhsm.Load(dir, devTokenLabel)
	if err == nil {
		return tok, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, false, err
	}
	out, err := exec.Command(self, "-dev-make-token", dir).CombinedOutput()
	if err != nil {
		return nil, false, fmt.Errorf("making the dev token: %w: %s", err, out)
	}
	tok, err = softhsm.Load(dir, devTokenLabel)
	return tok, err == nil, err
}

// makeDevToken is -dev-make-token: make the dev token in dir, and exit.
func makeDevToken(dir string) error {
	_, _, err := softhsm.Ensure(dir, devTokenLabel)
	return err
}

// devConfig writes the dev configuration on first start and returns its
// path.
func devConfig(dir, listen string, tok *softhsm.Token, log *slog.Logger) (string, error) {
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
