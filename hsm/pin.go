package hsm

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// PINSource says where the user PIN comes from. Exactly one field is set.
// The PIN is read afresh at every login so that it does not live in the
// process for longer than a login takes.
type PINSource struct {
	// File is a path to a file holding the PIN (trailing newline ignored).
	File string
	// Env is the name of an environment variable holding the PIN.
	Env string
	// Credential is the name of a systemd credential (LoadCredential=),
	// read from $CREDENTIALS_DIRECTORY.
	Credential string
}

func (p PINSource) validate() error {
	n := 0
	for _, s := range []string{p.File, p.Env, p.Credential} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("%w: set exactly one of PIN file, environment variable or systemd credential", ErrInvalidArgument)
	}
	if p.Credential != "" && (strings.ContainsRune(p.Credential, '/') || p.Credential == "." || p.Credential == "..") {
		return fmt.Errorf("%w: systemd credential name %q is not a plain name", ErrInvalidArgument, p.Credential)
	}
	return nil
}

// read returns the PIN. The caller zeroes the slice after use. Error texts
// name the source, never its content.
func (p PINSource) read() ([]byte, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	var (
		pin []byte
		err error
	)
	switch {
	case p.File != "":
		pin, err = os.ReadFile(p.File)
		if err != nil {
			return nil, fmt.Errorf("%w: reading PIN file: %w", ErrPINSource, err)
		}
	case p.Env != "":
		v, ok := os.LookupEnv(p.Env)
		if !ok {
			return nil, fmt.Errorf("%w: environment variable %s is not set", ErrPINSource, p.Env)
		}
		pin = []byte(v)
	default:
		dir := os.Getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return nil, fmt.Errorf("%w: CREDENTIALS_DIRECTORY is not set (is LoadCredential=%s in the unit?)", ErrPINSource, p.Credential)
		}
		pin, err = os.ReadFile(filepath.Join(dir, p.Credential))
		if err != nil {
			return nil, fmt.Errorf("%w: reading systemd credential %s: %w", ErrPINSource, p.Credential, err)
		}
	}
	trimmed := bytes.TrimRight(pin, "\r\n")
	if len(trimmed) == 0 {
		zero(pin)
		return nil, fmt.Errorf("%w: PIN source is empty", ErrPINSource)
	}
	return trimmed, nil
}

func zero(b []byte) {
	for i := range b {
		b[i] = 0
	}
}
