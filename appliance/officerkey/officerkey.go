// Package officerkey is how a security officer proves who they are: an SSH
// public key the officer made and keeps (a key file, or a key held by
// ssh-agent, which covers hardware keys: FIDO2 sk-ssh-ed25519 and
// sk-ecdsa, YubiKey PIV), and signatures by it over domain-separated
// messages: a login challenge, or the canonical content of a proposal the
// officer approves. The appliance stores public keys only; no officer
// secret ever passes through it.
//
// It imports nothing of keyrack's, so that the appliance, the officers'
// CLI and an offline verifier of the audit chain check the same bytes the
// same way.
package officerkey

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// Domains keep a signature made for one purpose from being accepted for
// another: every signed message starts with its domain and a NUL.
const (
	// DomainLogin prefixes a login challenge.
	DomainLogin = "keyrack officer login v1"
	// DomainApproval prefixes the canonical content of a proposal.
	DomainApproval = "keyrack proposal approval v1"
)

// ErrBadKey marks a public key keyrack does not take for an officer.
var ErrBadKey = errors.New("unsuitable officer key")

// ErrBadSignature marks a signature that does not verify.
var ErrBadSignature = errors.New("signature does not verify")

// minRSABits is the least RSA modulus accepted for an officer key.
const minRSABits = 3072

// ParsePublicKey reads an officer's public key in authorized_keys form
// (what `keyrack officer keygen` writes to FILE.pub and `ssh-add -L`
// prints). Ed25519, ECDSA, their FIDO2 (sk-) forms and RSA of at least
// 3072 bits are accepted.
func ParsePublicKey(text []byte) (ssh.PublicKey, error) {
	pub, _, _, rest, err := ssh.ParseAuthorizedKey(text)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("%w: one key only, not several", ErrBadKey)
	}
	if err := checkKey(pub); err != nil {
		return nil, err
	}
	return pub, nil
}

func checkKey(pub ssh.PublicKey) error {
	switch pub.Type() {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoSKED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521, ssh.KeyAlgoSKECDSA256:
		return nil
	case ssh.KeyAlgoRSA:
		cp, ok := pub.(ssh.CryptoPublicKey)
		if !ok {
			// ssh-agent's keys (*agent.Key) carry only the wire form:
			// parse it to reach the modulus.
			if parsed, err := ssh.ParsePublicKey(pub.Marshal()); err == nil {
				cp, ok = parsed.(ssh.CryptoPublicKey)
			}
		}
		if !ok {
			return fmt.Errorf("%w: unreadable RSA key", ErrBadKey)
		}
		rp, ok := cp.CryptoPublicKey().(*rsa.PublicKey)
		if !ok || rp.N.BitLen() < minRSABits {
			return fmt.Errorf("%w: RSA keys need at least %d bits", ErrBadKey, minRSABits)
		}
		return nil
	}
	return fmt.Errorf("%w: key type %s (use ed25519, ecdsa, their sk- forms, or RSA >= %d)", ErrBadKey, pub.Type(), minRSABits)
}

// Authorized is pub in authorized_keys form, one line, no comment: how the
// appliance records it.
func Authorized(pub ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
}

// Fingerprint is pub's SHA256 fingerprint as ssh-keygen -l prints it.
func Fingerprint(pub ssh.PublicKey) string { return ssh.FingerprintSHA256(pub) }

// Message is what is signed for content in domain.
func Message(domain string, content []byte) []byte {
	m := make([]byte, 0, len(domain)+1+len(content))
	m = append(m, domain...)
	m = append(m, 0)
	return append(m, content...)
}

// Sign signs content in domain with signer, and returns the signature in
// SSH wire form. RSA keys sign with rsa-sha2-512, never SHA-1.
func Sign(signer ssh.Signer, domain string, content []byte) ([]byte, error) {
	msg := Message(domain, content)
	var sig *ssh.Signature
	var err error
	if signer.PublicKey().Type() == ssh.KeyAlgoRSA {
		as, ok := signer.(ssh.AlgorithmSigner)
		if !ok {
			return nil, fmt.Errorf("%w: this RSA signer cannot make rsa-sha2-512 signatures", ErrBadKey)
		}
		sig, err = as.SignWithAlgorithm(rand.Reader, msg, ssh.KeyAlgoRSASHA512)
	} else {
		sig, err = signer.Sign(rand.Reader, msg)
	}
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	return ssh.Marshal(sig), nil
}

// Verify checks that sig, in SSH wire form, is pub's signature over
// content in domain.
func Verify(pub ssh.PublicKey, domain string, content, sig []byte) error {
	if err := checkKey(pub); err != nil {
		return err
	}
	var s ssh.Signature
	if err := ssh.Unmarshal(sig, &s); err != nil {
		return fmt.Errorf("%w: unreadable signature", ErrBadSignature)
	}
	if pub.Type() == ssh.KeyAlgoRSA && s.Format != ssh.KeyAlgoRSASHA256 && s.Format != ssh.KeyAlgoRSASHA512 {
		return fmt.Errorf("%w: RSA signatures must be rsa-sha2-256 or rsa-sha2-512, not %s", ErrBadSignature, s.Format)
	}
	if err := pub.Verify(Message(domain, content), &s); err != nil {
		return fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	return nil
}

// Generate makes a new Ed25519 officer key: the private key as an OpenSSH
// PEM block (encrypted with passphrase unless it is empty) and the public
// key in authorized_keys form with comment.
func Generate(comment string, passphrase []byte) (private, public []byte, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	defer clear(priv)
	var block *pem.Block
	if len(passphrase) > 0 {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, comment, passphrase)
	} else {
		block, err = ssh.MarshalPrivateKey(priv, comment)
	}
	if err != nil {
		return nil, nil, err
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
	if comment != "" {
		line += " " + comment
	}
	return pem.EncodeToMemory(block), []byte(line + "\n"), nil
}

// ErrPassphrase is a key file that needs a passphrase, or was given a
// wrong one.
var ErrPassphrase = errors.New("the key file needs its passphrase")

// LoadSigner reads a private key file (OpenSSH or PEM). passphrase is
// asked only for an encrypted file; nil means there is no way to ask.
func LoadSigner(pemBytes []byte, passphrase func() ([]byte, error)) (ssh.Signer, error) {
	s, err := ssh.ParsePrivateKey(pemBytes)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		if passphrase == nil {
			return nil, ErrPassphrase
		}
		pw, perr := passphrase()
		if perr != nil {
			return nil, perr
		}
		s, err = ssh.ParsePrivateKeyWithPassphrase(pemBytes, pw)
		clear(pw)
		if errors.Is(err, x509.IncorrectPasswordError) {
			return nil, fmt.Errorf("%w: wrong passphrase", ErrPassphrase)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	if err := checkKey(s.PublicKey()); err != nil {
		return nil, err
	}
	return s, nil
}

// AgentSigner finds the key with the given public key (or, when pub is
// nil, the only suitable key) in the ssh-agent listening on sock. The
// connection stays open for the signer's use: close it when done.
func AgentSigner(sock string, pub ssh.PublicKey) (ssh.Signer, func() error, error) {
	if sock == "" {
		return nil, nil, errors.New("no ssh-agent: SSH_AUTH_SOCK is not set")
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return nil, nil, fmt.Errorf("ssh-agent: %w", err)
	}
	signers, err := agent.NewClient(conn).Signers()
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("ssh-agent: %w", err)
	}
	var found []ssh.Signer
	for _, s := range signers {
		if checkKey(s.PublicKey()) != nil {
			continue
		}
		if pub == nil || bytes.Equal(s.PublicKey().Marshal(), pub.Marshal()) {
			found = append(found, s)
		}
	}
	switch {
	case len(found) == 1:
		return found[0], conn.Close, nil
	case len(found) == 0 && pub != nil:
		conn.Close()
		return nil, nil, fmt.Errorf("ssh-agent holds no key %s", Fingerprint(pub))
	case len(found) == 0:
		conn.Close()
		return nil, nil, errors.New("ssh-agent holds no suitable key (ed25519, ecdsa, sk-, RSA >= 3072)")
	}
	conn.Close()
	return nil, nil, fmt.Errorf("ssh-agent holds %d suitable keys: name one with its public key file", len(found))
}

// CertSHA256 is the SHA-256 (hex) of the DER of the first certificate in
// PEM data: what binds an officer to their TLS client certificate (the
// appliance compares it with the certificate a connection presents).
func CertSHA256(data []byte) (string, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return "", errors.New("no PEM CERTIFICATE block")
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return "", err
		}
		sum := sha256.Sum256(b.Bytes)
		return hex.EncodeToString(sum[:]), nil
	}
}

// CertFileSHA256 is CertSHA256 of the PEM file at path.
func CertFileSHA256(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading the client certificate: %w", err)
	}
	sum, err := CertSHA256(data)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return sum, nil
}
