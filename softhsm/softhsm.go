// Package softhsm makes throwaway SoftHSM2 tokens for development and tests.
//
// A token lives entirely in one directory: its own softhsm2.conf, the token
// store, and the SO and user PINs in files of mode 0600. SoftHSM reads its
// configuration from $SOFTHSM2_CONF when the library is initialized, which is
// a process-wide setting: one process uses one SoftHSM directory at a time.
package softhsm

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/keyrack/keyrack/hsm"
)

// ModuleCandidates are where Debian, Ubuntu and source builds put the library.
var ModuleCandidates = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

// ErrNotInstalled means no SoftHSM2 library was found.
var ErrNotInstalled = errors.New("softhsm: libsofthsm2.so not found (install the softhsm2 package: make deps)")

// ModulePath returns the first SoftHSM2 library that exists.
func ModulePath() (string, error) {
	for _, p := range ModuleCandidates {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", ErrNotInstalled
}

// Token is a SoftHSM token set up in Dir.
type Token struct {
	Dir       string
	Conf      string // path of its softhsm2.conf
	Module    string // path of libsofthsm2.so
	Label     string
	PINFile   string // user PIN, mode 0600
	SOPINFile string // security officer PIN, mode 0600
}

func layout(dir, label, module string) *Token {
	return &Token{
		Dir:       dir,
		Conf:      filepath.Join(dir, "softhsm2.conf"),
		Module:    module,
		Label:     label,
		PINFile:   filepath.Join(dir, "user-pin"),
		SOPINFile: filepath.Join(dir, "so-pin"),
	}
}

// Ensure returns the token in dir, creating it first if dir holds none.
// created tells which happened.
func Ensure(dir, label string) (t *Token, created bool, err error) {
	t, err = Load(dir, label)
	if err == nil {
		return t, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	t, err = Create(dir, label)
	return t, err == nil, err
}

// Load returns the token previously created in dir and activates it.
func Load(dir, label string) (*Token, error) {
	module, err := ModulePath()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	t := layout(dir, label, module)
	for _, f := range []string{t.Conf, t.PINFile} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("softhsm: no token in %s: %w", dir, err)
		}
	}
	return t, t.Activate()
}

// Create makes a new token labelled label in dir with random PINs. It
// refuses a dir that already holds a SoftHSM configuration.
func Create(dir, label string) (*Token, error) {
	module, err := ModulePath()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	t := layout(dir, label, module)
	if _, err := os.Stat(t.Conf); err == nil {
		return nil, fmt.Errorf("softhsm: %s already holds a token; refusing to overwrite it", dir)
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	conf := fmt.Sprintf("# keyrack throwaway token (created by package softhsm)\n"+
		"directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	if err := os.WriteFile(t.Conf, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	so, err := newPIN(t.SOPINFile)
	if err != nil {
		return nil, err
	}
	user, err := newPIN(t.PINFile)
	if err != nil {
		return nil, err
	}
	if err := t.Activate(); err != nil {
		return nil, err
	}
	if err := hsm.InitToken(module, label, so, user); err != nil {
		return nil, fmt.Errorf("softhsm: initializing token %q: %w", label, err)
	}
	return t, nil
}

// newPIN writes a random PIN to path (mode 0600) and returns it.
func newPIN(path string) ([]byte, error) {
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	pin := []byte(hex.EncodeToString(raw))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("softhsm: writing PIN file: %w", err)
	}
	if _, err := f.Write(pin); err != nil {
		f.Close()
		return nil, fmt.Errorf("softhsm: writing PIN file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("softhsm: writing PIN file: %w", err)
	}
	return pin, nil
}

// Activate points this process's SoftHSM library at the token's
// configuration. It must run before the library is initialized.
func (t *Token) Activate() error {
	return os.Setenv("SOFTHSM2_CONF", t.Conf)
}

// Config returns an hsm.Config for this token.
func (t *Token) Config() hsm.Config {
	return hsm.Config{
		Path:       t.Module,
		TokenLabel: t.Label,
		PIN:        hsm.PINSource{File: t.PINFile},
	}
}

// Env returns the environment a child process needs to see this token
// (pkcs11-tool, another keyrackd).
func (t *Token) Env() []string {
	return []string{"SOFTHSM2_CONF=" + t.Conf}
}

// OpenTemp makes a fresh token labelled label in a new temporary directory
// and opens it, for a test binary's TestMain. adjust, if not nil, may
// change the module configuration first. cleanup closes the module and
// removes the directory.
func OpenTemp(label string, adjust func(*hsm.Config)) (tok *Token, mod *hsm.Module, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "keyrack-"+label+"-")
	if err != nil {
		return nil, nil, nil, err
	}
	if tok, err = Create(dir, label); err != nil {
		os.RemoveAll(dir)
		return nil, nil, nil, err
	}
	cfg := tok.Config()
	if adjust != nil {
		adjust(&cfg)
	}
	if mod, err = hsm.Open(cfg); err != nil {
		os.RemoveAll(dir)
		return nil, nil, nil, err
	}
	return tok, mod, func() { mod.Close(); os.RemoveAll(dir) }, nil
}
