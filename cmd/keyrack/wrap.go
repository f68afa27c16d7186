package main

import (
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/keyrack/keyrack/appliance/assertion"
	"github.com/keyrack/keyrack/appliance/keyfile"
	"github.com/keyrack/keyrack/hsm/keywrap"
)

// wrap runs on the officer's own machine: it reads a brand key, checks it,
// and writes it wrapped to one appliance's import key. Only that
// appliance's token can unwrap the result.
func (c *cli) wrap(args []string) error {
	fs := flag.NewFlagSet("wrap", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	ikPath := fs.String("import-key", "", "the appliance's import key, PEM (keyrack import-key -o FILE)")
	fp := fs.String("fingerprint", "", "the import key's SHA-256 fingerprint as confirmed out of band (hex)")
	in := fs.String("in", "", "the brand key: armored OpenPGP secret key (gpg/snap export), PKCS#8 or PKCS#1 PEM")
	out := fs.String("out", "", "where to write the wrapped key")
	if err := fs.Parse(args); err != nil || *ikPath == "" || *fp == "" || *in == "" || *out == "" {
		return usageErr("wrap -import-key FILE -fingerprint HEX -in KEYFILE -out BLOB")
	}
	pemData, err := os.ReadFile(*ikPath)
	if err != nil {
		return err
	}
	block, _ := pem.Decode(pemData)
	if block == nil || block.Type != "PUBLIC KEY" {
		return fmt.Errorf("%s is not a PEM public key", *ikPath)
	}
	pubAny, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return fmt.Errorf("%s: %w", *ikPath, err)
	}
	pub, ok := pubAny.(*rsa.PublicKey)
	if !ok {
		return fmt.Errorf("%s is not an RSA key", *ikPath)
	}
	sum := sha256.Sum256(block.Bytes)
	got := hex.EncodeToString(sum[:])
	want := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(*fp), ":", ""))
	if got != want {
		return fmt.Errorf("import key fingerprint is %s, not the %s you confirmed: refusing to wrap to an unconfirmed key", got, want)
	}

	data, err := os.ReadFile(*in)
	if err != nil {
		return err
	}
	key, info, err := keyfile.Parse(data, 4096)
	clear(data)
	if err != nil {
		return err
	}
	keyID, err := assertion.KeyID(&key.PublicKey)
	if err != nil {
		keyfile.Zero(key)
		return err
	}
	der, err := keyfile.PKCS8(key)
	keyfile.Zero(key)
	if err != nil {
		return err
	}
	blob, err := keywrap.Wrap(pub, der)
	clear(der)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("writing the wrapped key (refusing to overwrite): %w", err)
	}
	if _, err := f.Write(blob); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	what := info.Format
	if info.Fingerprint != "" {
		what += " key " + info.Fingerprint
	}
	fmt.Fprintf(c.stdout, "wrapped %s (RSA-%d) to import key %s…: %s (%d bytes)\n", what, info.Bits, got[:16], *out, len(blob))
	// The appliance takes the key's id with the blob (keys import -key-id),
	// shows it to the approvers and refuses a blob that holds another key.
	fmt.Fprintf(c.stdout, "sign-key-sha3-384 %s\n", keyID)
	// As sha256sum prints it: what approvers find in the proposal's content.
	blobSum := sha256.Sum256(blob)
	fmt.Fprintf(c.stdout, "%s  %s\n", hex.EncodeToString(blobSum[:]), *out)
	return nil
}
