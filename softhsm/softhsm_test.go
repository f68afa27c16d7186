package softhsm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCreateEnsureRefuse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tok")
	tok, created, err := Ensure(dir, "softhsm-test")
	if err != nil || !created {
		t.Fatalf("Ensure on an empty dir: created=%v err=%v", created, err)
	}
	if os.Getenv("SOFTHSM2_CONF") != tok.Conf {
		t.Fatal("token not activated")
	}
	for _, f := range []string{tok.PINFile, tok.SOPINFile, tok.Conf} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	pin, _ := os.ReadFile(tok.PINFile)
	so, _ := os.ReadFile(tok.SOPINFile)
	if len(pin) != 32 || string(pin) == string(so) {
		t.Fatalf("PINs: user %d bytes, equal to SO PIN: %v", len(pin), string(pin) == string(so))
	}
	conf, _ := os.ReadFile(tok.Conf)
	if !strings.Contains(string(conf), filepath.Join(tok.Dir, "tokens")) {
		t.Fatalf("config does not point into the token dir:\n%s", conf)
	}

	again, created, err := Ensure(dir, "softhsm-test")
	if err != nil || created || again.Conf != tok.Conf {
		t.Fatalf("second Ensure: created=%v err=%v", created, err)
	}
	if _, err := Create(dir, "softhsm-test"); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("Create over an existing token: %v", err)
	}
	pin2, _ := os.ReadFile(tok.PINFile)
	if string(pin2) != string(pin) {
		t.Fatal("the refused Create changed the PIN file")
	}
	if _, err := Load(filepath.Join(t.TempDir(), "none"), "x"); !os.IsNotExist(unwrapAll(err)) {
		t.Fatalf("Load of an empty dir: %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}
