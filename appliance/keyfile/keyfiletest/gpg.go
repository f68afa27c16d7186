// Package keyfiletest makes OpenPGP secret keys the way brand owners make
// them (`snap create-key` drives gpg), for tests. Keys are made at test
// time: no key material is kept in the repository.
package keyfiletest

import (
	"fmt"
	"os/exec"
	"testing"
)

// GPGExport makes an RSA key of bits with the real gpg in a throwaway
// home and returns `gpg --armor --export-secret-key` of it, protected by
// passphrase when it is not empty.
func GPGExport(t testing.TB, bits int, passphrase string) []byte {
	t.Helper()
	if _, err := exec.LookPath("gpg"); err != nil {
		t.Fatal("gpg is needed (make deps installs gnupg)")
	}
	home := t.TempDir()
	run := func(args ...string) []byte {
		base := []string{"--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", passphrase}
		out, err := exec.Command("gpg", append(base, args...)...).Output()
		if err != nil {
			stderr := ""
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("gpg %v: %v\n%s", args, err, stderr)
		}
		return out
	}
	run("--quick-gen-key", "brand <brand@keyrack.invalid>", fmt.Sprintf("rsa%d", bits), "sign", "never")
	out := run("--armor", "--export-secret-key", "brand@keyrack.invalid")
	// gpg leaves an agent running per home; stop it with the test.
	exec.Command("gpgconf", "--homedir", home, "--kill", "gpg-agent").Run()
	return out
}
