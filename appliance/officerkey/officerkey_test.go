package officerkey

import (
	"bytes"
	"crypto"
	"crypto/dsa" //nolint:staticcheck // only to build a key type officers may not use
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// ---------------------------------------------------------------------------
// Helpers

// RSA key generation is slow, so the keys the tests need are made once and
// shared. They are only ever read.
var (
	rsa3072 = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA(3072) })
	rsa2048 = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA(2048) })
)

func mustRSA(bits int) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		panic(err)
	}
	return k
}

func newEd25519(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newECDSA(t *testing.T, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func signerOf(t *testing.T, key crypto.Signer) ssh.Signer {
	t.Helper()
	s, err := ssh.NewSignerFromKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sameKey(a, b ssh.PublicKey) bool { return bytes.Equal(a.Marshal(), b.Marshal()) }

// needTool finds an external program the test relies on. Missing tools are
// a failure, not a skip: CI installs openssh-client, and a silently skipped
// interop test proves nothing.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required by this test (install openssh-client): %v", name, err)
	}
	return p
}

// run runs an external program with no stdin (so it can never stop to
// prompt) and returns its stdout, failing the test on a non-zero exit.
func run(t *testing.T, env []string, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(needTool(t, name), args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	// 0600: ssh-keygen and ssh-add refuse private key files others can read.
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustParseAuthorized(t *testing.T, line []byte) (ssh.PublicKey, string) {
	t.Helper()
	pub, comment, _, _, err := ssh.ParseAuthorizedKey(line)
	if err != nil {
		t.Fatalf("parsing %q: %v", line, err)
	}
	return pub, comment
}

// passphraseFunc returns a callback for LoadSigner that hands out a fresh
// copy of pw (LoadSigner wipes what it is given) and counts its calls.
func passphraseFunc(pw string, calls *int) func() ([]byte, error) {
	return func() ([]byte, error) {
		*calls++
		return []byte(pw), nil
	}
}

// ---------------------------------------------------------------------------
// Message

func TestMessage(t *testing.T) {
	tests := []struct {
		domain  string
		content []byte
		want    []byte
	}{
		{DomainLogin, []byte("challenge"), []byte("keyrack officer login v1\x00challenge")},
		{DomainApproval, []byte("proposal"), []byte("keyrack proposal approval v1\x00proposal")},
		{DomainLogin, nil, []byte("keyrack officer login v1\x00")},
		// Content may itself hold NULs; they are carried through untouched.
		{DomainApproval, []byte("a\x00b"), []byte("keyrack proposal approval v1\x00a\x00b")},
	}
	for _, tc := range tests {
		if got := Message(tc.domain, tc.content); !bytes.Equal(got, tc.want) {
			t.Errorf("Message(%q, %q) = %q, want %q", tc.domain, tc.content, got, tc.want)
		}
	}
	// The two domains must differ, or domain separation means nothing.
	if bytes.Equal(Message(DomainLogin, []byte("x")), Message(DomainApproval, []byte("x"))) {
		t.Error("login and approval messages for the same content are equal")
	}
}

// ---------------------------------------------------------------------------
// Generate and LoadSigner

func TestGenerate(t *testing.T) {
	tests := []struct {
		name       string
		comment    string
		passphrase string
	}{
		{"plain", "alice@officer", ""},
		{"encrypted", "bob@officer", "correct horse battery staple"},
		{"plain without comment", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			priv, pubLine, err := Generate(tc.comment, []byte(tc.passphrase))
			if err != nil {
				t.Fatal(err)
			}
			block, _ := pem.Decode(priv)
			if block == nil || block.Type != "OPENSSH PRIVATE KEY" {
				t.Fatalf("private key is not an OpenSSH PEM block:\n%s", priv)
			}

			// The public side: one line, ending in a newline, that
			// ParsePublicKey accepts and that carries the comment.
			if !bytes.HasSuffix(pubLine, []byte("\n")) || bytes.Count(pubLine, []byte("\n")) != 1 {
				t.Errorf("public key %q is not exactly one line", pubLine)
			}
			pub, err := ParsePublicKey(pubLine)
			if err != nil {
				t.Fatalf("ParsePublicKey(Generate's public line): %v", err)
			}
			if pub.Type() != ssh.KeyAlgoED25519 {
				t.Errorf("key type %s, want %s", pub.Type(), ssh.KeyAlgoED25519)
			}
			_, comment := mustParseAuthorized(t, pubLine)
			if comment != tc.comment {
				t.Errorf("public line comment %q, want %q", comment, tc.comment)
			}
			if tc.comment == "" && string(pubLine) != Authorized(pub)+"\n" {
				t.Errorf("public line without comment %q, want %q", pubLine, Authorized(pub)+"\n")
			}

			// The private side loads, asking for the passphrase only when
			// there is one, and is the same key as the public line.
			calls := 0
			s, err := LoadSigner(priv, passphraseFunc(tc.passphrase, &calls))
			if err != nil {
				t.Fatalf("LoadSigner: %v", err)
			}
			if wantCalls := map[bool]int{true: 1, false: 0}[tc.passphrase != ""]; calls != wantCalls {
				t.Errorf("passphrase asked %d times, want %d", calls, wantCalls)
			}
			if !sameKey(s.PublicKey(), pub) {
				t.Error("the private key does not match the public line")
			}

			// And it signs something the public line verifies.
			sig, err := Sign(s, DomainLogin, []byte("challenge"))
			if err != nil {
				t.Fatal(err)
			}
			if err := Verify(pub, DomainLogin, []byte("challenge"), sig); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}

func TestGenerateMakesFreshKeys(t *testing.T) {
	_, a, err := Generate("x", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, b, err := Generate("x", nil)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, b) {
		t.Error("two calls to Generate made the same key")
	}
}

func TestLoadSignerPassphrase(t *testing.T) {
	const pw = "s3cret"
	enc, _, err := Generate("carol", []byte(pw))
	if err != nil {
		t.Fatal(err)
	}
	plain, _, err := Generate("carol", nil)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("encrypted, nil callback", func(t *testing.T) {
		_, err := LoadSigner(enc, nil)
		if !errors.Is(err, ErrPassphrase) {
			t.Errorf("err = %v, want ErrPassphrase", err)
		}
	})
	t.Run("encrypted, wrong passphrase", func(t *testing.T) {
		calls := 0
		_, err := LoadSigner(enc, passphraseFunc("not it", &calls))
		if !errors.Is(err, ErrPassphrase) {
			t.Errorf("err = %v, want ErrPassphrase", err)
		}
		if errors.Is(err, ErrBadKey) {
			t.Errorf("a wrong passphrase is not a bad key: %v", err)
		}
		if calls != 1 {
			t.Errorf("passphrase asked %d times, want 1", calls)
		}
	})
	t.Run("encrypted, callback fails", func(t *testing.T) {
		// An officer who cancels the prompt gets that error back, not a
		// misleading "wrong passphrase".
		errCancel := errors.New("prompt cancelled")
		_, err := LoadSigner(enc, func() ([]byte, error) { return nil, errCancel })
		if !errors.Is(err, errCancel) {
			t.Errorf("err = %v, want the callback's error", err)
		}
	})
	t.Run("encrypted, passphrase is wiped after use", func(t *testing.T) {
		var given []byte
		_, err := LoadSigner(enc, func() ([]byte, error) {
			given = []byte(pw)
			return given, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(given, make([]byte, len(pw))) {
			t.Errorf("passphrase left in memory as %q", given)
		}
	})
	t.Run("plain, callback never asked", func(t *testing.T) {
		_, err := LoadSigner(plain, func() ([]byte, error) {
			t.Error("passphrase asked for an unencrypted key")
			return nil, errors.New("unexpected")
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := LoadSigner(plain, nil); err != nil {
			t.Errorf("unencrypted key with nil callback: %v", err)
		}
	})
}

func TestLoadSignerRefuses(t *testing.T) {
	weak := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsa2048())})
	strong := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsa3072())})

	// A PEM RSA key of the right size loads: the refusal below is about
	// size, not format.
	if _, err := LoadSigner(strong, nil); err != nil {
		t.Fatalf("PEM RSA-3072 key: %v", err)
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{"garbage", []byte("this is not a key")},
		{"empty", nil},
		{"public key instead of private", []byte(Authorized(signerOf(t, newEd25519(t)).PublicKey()))},
		{"RSA-2048", weak},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := LoadSigner(tc.in, nil)
			if !errors.Is(err, ErrBadKey) {
				t.Errorf("err = %v, want ErrBadKey", err)
			}
			if s != nil {
				t.Error("a signer came back alongside the error")
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Interop with OpenSSH's ssh-keygen

// TestGenerateReadBySSHKeygen checks that OpenSSH reads what Generate writes:
// an officer may well inspect or use the key with the standard tools.
func TestGenerateReadBySSHKeygen(t *testing.T) {
	needTool(t, "ssh-keygen")
	tests := []struct {
		name, comment, passphrase string
	}{
		{"plain", "dave@officer", ""},
		{"encrypted", "erin@officer", "hunter2 hunter2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			priv, pubLine, err := Generate(tc.comment, []byte(tc.passphrase))
			if err != nil {
				t.Fatal(err)
			}
			privPath := writeFile(t, dir, "key", priv)
			pubPath := writeFile(t, dir, "key.pub", pubLine)
			want, _ := mustParseAuthorized(t, pubLine)

			// -P with the empty string is right for the plain key too,
			// and stops ssh-keygen from ever prompting.
			out := run(t, nil, "ssh-keygen", "-y", "-P", tc.passphrase, "-f", privPath)
			got, _ := mustParseAuthorized(t, out)
			if !sameKey(got, want) {
				t.Errorf("ssh-keygen -y prints %q, Generate wrote %q", out, pubLine)
			}

			// A wrong passphrase must fail in ssh-keygen too: the file
			// really is encrypted, not just labelled so.
			if tc.passphrase != "" {
				cmd := exec.Command("ssh-keygen", "-y", "-P", "wrong", "-f", privPath)
				if out, err := cmd.CombinedOutput(); err == nil {
					t.Errorf("ssh-keygen read the encrypted key with a wrong passphrase: %s", out)
				}
			}

			// Fingerprint matches ssh-keygen -l, field 2 of
			// "256 SHA256:... comment (ED25519)".
			fields := strings.Fields(string(run(t, nil, "ssh-keygen", "-l", "-f", pubPath)))
			if len(fields) < 2 || fields[1] != Fingerprint(want) {
				t.Errorf("ssh-keygen -l gives %q, Fingerprint gives %q", fields, Fingerprint(want))
			}

			// In an unencrypted file the comment is readable, and
			// ssh-keygen -l on the private file shows it.
			if tc.passphrase == "" {
				out := string(run(t, nil, "ssh-keygen", "-l", "-f", privPath))
				if !strings.Contains(out, tc.comment) {
					t.Errorf("ssh-keygen -l on the private key: %q, want comment %q", out, tc.comment)
				}
			}
		})
	}
}

// TestLoadSignerSSHKeygenKeys loads keys that ssh-keygen made, as an officer
// who already has a key would bring it.
func TestLoadSignerSSHKeygenKeys(t *testing.T) {
	needTool(t, "ssh-keygen")
	tests := []struct {
		name       string
		args       []string // key type and size options
		passphrase string
		wantErr    error
	}{
		{"ed25519", []string{"-t", "ed25519"}, "", nil},
		{"ed25519 encrypted", []string{"-t", "ed25519"}, "pass phrase", nil},
		{"ecdsa P-256", []string{"-t", "ecdsa", "-b", "256"}, "", nil},
		{"ecdsa P-384", []string{"-t", "ecdsa", "-b", "384"}, "", nil},
		{"rsa 3072", []string{"-t", "rsa", "-b", "3072"}, "", nil},
		{"rsa 3072 legacy PEM", []string{"-t", "rsa", "-b", "3072", "-m", "PEM"}, "", nil},
		{"rsa 3072 legacy PEM encrypted", []string{"-t", "rsa", "-b", "3072", "-m", "PEM"}, "pass phrase", nil},
		{"rsa 2048", []string{"-t", "rsa", "-b", "2048"}, "", ErrBadKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "id")
			args := append([]string{"-q", "-C", "officer@host", "-N", tc.passphrase, "-f", path}, tc.args...)
			run(t, nil, "ssh-keygen", args...)
			priv, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			pubLine, err := os.ReadFile(path + ".pub")
			if err != nil {
				t.Fatal(err)
			}

			calls := 0
			s, err := LoadSigner(priv, passphraseFunc(tc.passphrase, &calls))
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("LoadSigner err = %v, want %v", err, tc.wantErr)
				}
				// ParsePublicKey agrees about the .pub file.
				if _, err := ParsePublicKey(pubLine); !errors.Is(err, tc.wantErr) {
					t.Errorf("ParsePublicKey err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadSigner: %v", err)
			}
			if tc.passphrase == "" && calls != 0 {
				t.Errorf("passphrase asked for an unencrypted key")
			}
			if tc.passphrase != "" {
				if calls != 1 {
					t.Errorf("passphrase asked %d times, want 1", calls)
				}
				if _, err := LoadSigner(priv, nil); !errors.Is(err, ErrPassphrase) {
					t.Errorf("nil callback: err = %v, want ErrPassphrase", err)
				}
			}
			pub, err := ParsePublicKey(pubLine)
			if err != nil {
				t.Fatalf("ParsePublicKey(%s.pub): %v", path, err)
			}
			if !sameKey(s.PublicKey(), pub) {
				t.Fatal("loaded key does not match ssh-keygen's .pub file")
			}
			sig, err := Sign(s, DomainApproval, []byte("proposal"))
			if err != nil {
				t.Fatal(err)
			}
			if err := Verify(pub, DomainApproval, []byte("proposal"), sig); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Sign and Verify

func TestSignVerify(t *testing.T) {
	keys := []struct {
		name       string
		key        crypto.Signer
		wantFormat string // the signature algorithm Sign must choose
	}{
		{"ed25519", newEd25519(t), ssh.KeyAlgoED25519},
		{"ecdsa P-256", newECDSA(t, elliptic.P256()), ssh.KeyAlgoECDSA256},
		{"ecdsa P-384", newECDSA(t, elliptic.P384()), ssh.KeyAlgoECDSA384},
		{"ecdsa P-521", newECDSA(t, elliptic.P521()), ssh.KeyAlgoECDSA521},
		{"rsa 3072", rsa3072(), ssh.KeyAlgoRSASHA512},
	}
	// A second key of another type, to check that a signature is bound to
	// the key that made it.
	other := signerOf(t, newEd25519(t)).PublicKey()

	for _, k := range keys {
		t.Run(k.name, func(t *testing.T) {
			s := signerOf(t, k.key)
			pub := s.PublicKey()
			content := []byte("canonical proposal content")
			sig, err := Sign(s, DomainApproval, content)
			if err != nil {
				t.Fatal(err)
			}
			var decoded ssh.Signature
			if err := ssh.Unmarshal(sig, &decoded); err != nil {
				t.Fatalf("signature is not in SSH wire form: %v", err)
			}
			if decoded.Format != k.wantFormat {
				t.Errorf("signature format %s, want %s", decoded.Format, k.wantFormat)
			}
			// The signature is over Message(domain, content), so plain SSH
			// verification of that message must accept it.
			if err := pub.Verify(Message(DomainApproval, content), &decoded); err != nil {
				t.Errorf("signature is not over Message(domain, content): %v", err)
			}
			if err := Verify(pub, DomainApproval, content, sig); err != nil {
				t.Fatalf("Verify of a good signature: %v", err)
			}

			refusals := []struct {
				name    string
				pub     ssh.PublicKey
				domain  string
				content []byte
				sig     []byte
			}{
				{"another key", other, DomainApproval, content, sig},
				{"other content", pub, DomainApproval, []byte("canonical proposal content!"), sig},
				{"empty content", pub, DomainApproval, nil, sig},
				// A login signature must never pass as an approval, nor
				// the other way round.
				{"another domain", pub, DomainLogin, content, sig},
				{"truncated signature", pub, DomainApproval, content, sig[:len(sig)-1]},
				{"half a signature", pub, DomainApproval, content, sig[:len(sig)/2]},
				{"empty signature", pub, DomainApproval, content, nil},
				{"garbage signature", pub, DomainApproval, content, []byte("garbage garbage garbage")},
				{"flipped last byte", pub, DomainApproval, content, flipLast(sig)},
			}
			for _, r := range refusals {
				t.Run(r.name, func(t *testing.T) {
					err := Verify(r.pub, r.domain, r.content, r.sig)
					if !errors.Is(err, ErrBadSignature) {
						t.Errorf("err = %v, want ErrBadSignature", err)
					}
				})
			}
		})
	}
}

func flipLast(b []byte) []byte {
	c := bytes.Clone(b)
	c[len(c)-1] ^= 0x01
	return c
}

func TestVerifyLoginSignatureIsNotApproval(t *testing.T) {
	// The same bytes as login challenge and as proposal content: the
	// domain alone tells them apart.
	s := signerOf(t, newEd25519(t))
	content := []byte("same bytes")
	login, err := Sign(s, DomainLogin, content)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(s.PublicKey(), DomainLogin, content, login); err != nil {
		t.Fatalf("login signature as login: %v", err)
	}
	if err := Verify(s.PublicKey(), DomainApproval, content, login); !errors.Is(err, ErrBadSignature) {
		t.Errorf("login signature as approval: err = %v, want ErrBadSignature", err)
	}
	// Nor does a raw SSH signature over the bare content pass: signatures
	// made for anything outside keyrack are not keyrack signatures.
	raw, err := s.Sign(rand.Reader, content)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(s.PublicKey(), DomainLogin, content, ssh.Marshal(raw)); !errors.Is(err, ErrBadSignature) {
		t.Errorf("signature over bare content: err = %v, want ErrBadSignature", err)
	}
}

// TestVerifyRSAAlgorithms checks which RSA signature algorithms Verify takes.
// Each signature is made directly over Message, so it is cryptographically
// valid: a refusal is Verify's policy, not a broken signature.
func TestVerifyRSAAlgorithms(t *testing.T) {
	s := signerOf(t, rsa3072())
	as, ok := s.(ssh.AlgorithmSigner)
	if !ok {
		t.Fatal("ssh.NewSignerFromKey(RSA) is not an AlgorithmSigner")
	}
	content := []byte("proposal")
	msg := Message(DomainApproval, content)
	tests := []struct {
		algo    string
		wantErr error
	}{
		{ssh.KeyAlgoRSASHA512, nil},
		{ssh.KeyAlgoRSASHA256, nil},
		// SHA-1 "ssh-rsa" signatures are refused.
		{ssh.KeyAlgoRSA, ErrBadSignature},
	}
	for _, tc := range tests {
		t.Run(tc.algo, func(t *testing.T) {
			sig, err := as.SignWithAlgorithm(rand.Reader, msg, tc.algo)
			if err != nil {
				t.Fatal(err)
			}
			if sig.Format != tc.algo {
				t.Fatalf("made a %s signature, asked for %s", sig.Format, tc.algo)
			}
			if err := s.PublicKey().Verify(msg, sig); err != nil {
				t.Fatalf("the %s signature is not valid to begin with: %v", tc.algo, err)
			}
			err = Verify(s.PublicKey(), DomainApproval, content, ssh.Marshal(sig))
			if tc.wantErr == nil && err != nil {
				t.Errorf("Verify: %v", err)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// TestWeakRSA checks that RSA keys below 3072 bits are refused everywhere,
// even with a signature that is cryptographically valid.
func TestWeakRSA(t *testing.T) {
	s := signerOf(t, rsa2048())
	pub := s.PublicKey()

	if _, err := ParsePublicKey(ssh.MarshalAuthorizedKey(pub)); !errors.Is(err, ErrBadKey) {
		t.Errorf("ParsePublicKey: err = %v, want ErrBadKey", err)
	}

	content := []byte("proposal")
	sig, err := s.(ssh.AlgorithmSigner).SignWithAlgorithm(rand.Reader, Message(DomainApproval, content), ssh.KeyAlgoRSASHA512)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Verify(Message(DomainApproval, content), sig); err != nil {
		t.Fatalf("the signature is not valid to begin with: %v", err)
	}
	err = Verify(pub, DomainApproval, content, ssh.Marshal(sig))
	if !errors.Is(err, ErrBadKey) {
		t.Errorf("Verify: err = %v, want ErrBadKey", err)
	}
	if !strings.Contains(err.Error(), "3072") {
		t.Errorf("error %q does not tell the officer the size needed", err)
	}
}

// TestUnsupportedKeyTypes checks key types that are valid SSH keys but not
// officer keys.
func TestUnsupportedKeyTypes(t *testing.T) {
	// DSA: obsolete, and refused by OpenSSH itself.
	var dk dsa.PrivateKey
	if err := dsa.GenerateParameters(&dk.Parameters, rand.Reader, dsa.L1024N160); err != nil {
		t.Fatal(err)
	}
	if err := dsa.GenerateKey(&dk, rand.Reader); err != nil {
		t.Fatal(err)
	}
	dsaSigner, err := ssh.NewSignerFromKey(&dk)
	if err != nil {
		t.Fatal(err)
	}

	// An OpenSSH certificate: the appliance records plain keys, and a
	// certificate would bring a CA and validity rules with it.
	edSigner := signerOf(t, newEd25519(t))
	cert := &ssh.Certificate{
		Key:             edSigner.PublicKey(),
		CertType:        ssh.UserCert,
		ValidPrincipals: []string{"officer"},
		ValidBefore:     ssh.CertTimeInfinity,
	}
	if err := cert.SignCert(rand.Reader, signerOf(t, newEd25519(t))); err != nil {
		t.Fatal(err)
	}
	certSigner, err := ssh.NewCertSigner(cert, edSigner)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		signer ssh.Signer
	}{
		{"dsa", dsaSigner},
		{"ed25519 certificate", certSigner},
	}
	content := []byte("proposal")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pub := tc.signer.PublicKey()
			if _, err := ParsePublicKey(ssh.MarshalAuthorizedKey(pub)); !errors.Is(err, ErrBadKey) {
				t.Errorf("ParsePublicKey(%s): err = %v, want ErrBadKey", pub.Type(), err)
			}
			// A signature the key type itself accepts is still refused.
			raw, err := tc.signer.Sign(rand.Reader, Message(DomainApproval, content))
			if err != nil {
				t.Fatal(err)
			}
			if err := pub.Verify(Message(DomainApproval, content), raw); err != nil {
				t.Fatalf("the signature is not valid to begin with: %v", err)
			}
			if err := Verify(pub, DomainApproval, content, ssh.Marshal(raw)); !errors.Is(err, ErrBadKey) {
				t.Errorf("Verify(%s): err = %v, want ErrBadKey", pub.Type(), err)
			}
		})
	}
}

// plainSigner hides everything of an ssh.Signer but the Signer interface
// itself, as a minimal third-party signer would.
type plainSigner struct{ s ssh.Signer }

func (p plainSigner) PublicKey() ssh.PublicKey { return p.s.PublicKey() }
func (p plainSigner) Sign(r io.Reader, data []byte) (*ssh.Signature, error) {
	return p.s.Sign(r, data)
}

func TestSignRSANeedsAlgorithmSigner(t *testing.T) {
	// Such a signer could only make SHA-1 ssh-rsa signatures for an RSA
	// key; Sign refuses rather than make one.
	_, err := Sign(plainSigner{signerOf(t, rsa3072())}, DomainLogin, []byte("x"))
	if !errors.Is(err, ErrBadKey) {
		t.Errorf("err = %v, want ErrBadKey", err)
	}
	// For other key types there is only one algorithm, and it works.
	ed := signerOf(t, newEd25519(t))
	sig, err := Sign(plainSigner{ed}, DomainLogin, []byte("x"))
	if err != nil {
		t.Fatalf("ed25519 through a plain Signer: %v", err)
	}
	if err := Verify(ed.PublicKey(), DomainLogin, []byte("x"), sig); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

// ---------------------------------------------------------------------------
// FIDO2 (sk-) keys, with a simulated authenticator

// fakeAuthenticator signs as a FIDO2 security key does for OpenSSH: over
// SHA-256(application) || flags || counter || SHA-256(message).
type fakeAuthenticator struct {
	app     string
	ed      ed25519.PrivateKey // for sk-ssh-ed25519
	ec      *ecdsa.PrivateKey  // for sk-ecdsa-sha2-nistp256
	counter uint32
}

func (a *fakeAuthenticator) publicKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	var wire []byte
	if a.ed != nil {
		wire = ssh.Marshal(struct {
			Name, Key, App string
		}{ssh.KeyAlgoSKED25519, string(a.ed.Public().(ed25519.PublicKey)), a.app})
	} else {
		pt, err := a.ec.PublicKey.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		wire = ssh.Marshal(struct {
			Name, Curve, Key, App string
		}{ssh.KeyAlgoSKECDSA256, "nistp256", string(pt), a.app})
	}
	pub, err := ssh.ParsePublicKey(wire)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

const flagUserPresent = 0x01

func (a *fakeAuthenticator) sign(t *testing.T, msg []byte, flags byte) []byte {
	t.Helper()
	a.counter++
	appDigest := sha256.Sum256([]byte(a.app))
	msgDigest := sha256.Sum256(msg)
	signed := ssh.Marshal(struct {
		App     []byte `ssh:"rest"`
		Flags   byte
		Counter uint32
		Msg     []byte `ssh:"rest"`
	}{appDigest[:], flags, a.counter, msgDigest[:]})
	rest := ssh.Marshal(struct {
		Flags   byte
		Counter uint32
	}{flags, a.counter})

	if a.ed != nil {
		return ssh.Marshal(&ssh.Signature{Format: ssh.KeyAlgoSKED25519, Blob: ed25519.Sign(a.ed, signed), Rest: rest})
	}
	d := sha256.Sum256(signed)
	r, s, err := ecdsa.Sign(rand.Reader, a.ec, d[:])
	if err != nil {
		t.Fatal(err)
	}
	blob := ssh.Marshal(struct{ R, S *big.Int }{r, s})
	return ssh.Marshal(&ssh.Signature{Format: ssh.KeyAlgoSKECDSA256, Blob: blob, Rest: rest})
}

func TestSecurityKeys(t *testing.T) {
	tests := []struct {
		name string
		auth *fakeAuthenticator
	}{
		{ssh.KeyAlgoSKED25519, &fakeAuthenticator{app: "ssh:", ed: newEd25519(t)}},
		{ssh.KeyAlgoSKECDSA256, &fakeAuthenticator{app: "ssh:", ec: newECDSA(t, elliptic.P256())}},
	}
	content := []byte("proposal")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pub := tc.auth.publicKey(t)
			if pub.Type() != tc.name {
				t.Fatalf("built a %s key, want %s", pub.Type(), tc.name)
			}
			parsed, err := ParsePublicKey(ssh.MarshalAuthorizedKey(pub))
			if err != nil {
				t.Fatalf("ParsePublicKey: %v", err)
			}
			if !sameKey(parsed, pub) {
				t.Fatal("ParsePublicKey changed the key")
			}

			good := tc.auth.sign(t, Message(DomainApproval, content), flagUserPresent)
			if err := Verify(pub, DomainApproval, content, good); err != nil {
				t.Errorf("Verify of a touched signature: %v", err)
			}
			if err := Verify(pub, DomainLogin, content, good); !errors.Is(err, ErrBadSignature) {
				t.Errorf("another domain: err = %v, want ErrBadSignature", err)
			}
			// Without the user-presence flag nobody touched the key: an
			// officer's approval needs the officer there.
			untouched := tc.auth.sign(t, Message(DomainApproval, content), 0)
			if err := Verify(pub, DomainApproval, content, untouched); !errors.Is(err, ErrBadSignature) {
				t.Errorf("untouched signature: err = %v, want ErrBadSignature", err)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// ParsePublicKey, Authorized, Fingerprint

func TestParsePublicKey(t *testing.T) {
	edA := signerOf(t, newEd25519(t)).PublicKey()
	edB := signerOf(t, newEd25519(t)).PublicKey()
	ec := signerOf(t, newECDSA(t, elliptic.P256())).PublicKey()
	rs := signerOf(t, rsa3072()).PublicKey()
	a, b := Authorized(edA), Authorized(edB)

	good := []struct {
		name string
		in   string
		want ssh.PublicKey
	}{
		{"bare ed25519", a, edA},
		{"with comment", a + " alice@laptop", edA},
		{"comment with spaces", a + " Alice Officer (YubiKey 5)", edA},
		{"trailing newline", a + " alice\n", edA},
		{"CRLF line end", a + " alice\r\n", edA},
		{"after a comment line", "# alice's officer key\n" + a + "\n", edA},
		{"ecdsa P-256", Authorized(ec), ec},
		{"rsa 3072", Authorized(rs) + " rsa", rs},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePublicKey([]byte(tc.in))
			if err != nil {
				t.Fatalf("ParsePublicKey(%q): %v", tc.in, err)
			}
			if !sameKey(got, tc.want) {
				t.Errorf("ParsePublicKey(%q) gave another key", tc.in)
			}
		})
	}

	bad := []struct {
		name string
		in   string
	}{
		{"two keys", a + "\n" + b + "\n"},
		{"the same key twice", a + " one\n" + a + " two\n"},
		{"garbage", "not a key at all"},
		{"garbage base64", "ssh-ed25519 AAAAnotbase64!!!"},
		{"empty", ""},
		{"only a comment", "# nothing here\n"},
		{"type without key", "ssh-ed25519"},
		{"private key", "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			pub, err := ParsePublicKey([]byte(tc.in))
			if !errors.Is(err, ErrBadKey) {
				t.Errorf("ParsePublicKey(%q): err = %v, want ErrBadKey", tc.in, err)
			}
			if pub != nil {
				t.Errorf("ParsePublicKey(%q) returned a key with its error", tc.in)
			}
		})
	}
}

func TestAuthorizedAndFingerprint(t *testing.T) {
	pub := signerOf(t, newEd25519(t)).PublicKey()
	line := Authorized(pub)
	// One line, two fields (type and key): no comment, no newline.
	if strings.ContainsAny(line, "\r\n") {
		t.Errorf("Authorized %q has a line break", line)
	}
	if f := strings.Fields(line); len(f) != 2 || f[0] != ssh.KeyAlgoED25519 {
		t.Errorf("Authorized %q is not \"ssh-ed25519 KEY\"", line)
	}
	// Round trip: what the appliance records reads back as the same key,
	// even from a line with a comment.
	back, err := ParsePublicKey([]byte(line))
	if err != nil || !sameKey(back, pub) {
		t.Fatalf("Authorized does not round-trip: %v", err)
	}
	withComment, err := ParsePublicKey([]byte(line + " alice"))
	if err != nil || Authorized(withComment) != line {
		t.Errorf("Authorized of a key read with a comment = %q, want %q (err %v)", Authorized(withComment), line, err)
	}

	fp := Fingerprint(pub)
	if !strings.HasPrefix(fp, "SHA256:") || strings.HasSuffix(fp, "=") {
		t.Errorf("Fingerprint %q is not in ssh-keygen's SHA256:... form", fp)
	}
	if Fingerprint(signerOf(t, newEd25519(t)).PublicKey()) == fp {
		t.Error("two keys have the same fingerprint")
	}
}

// ---------------------------------------------------------------------------
// AgentSigner against a real ssh-agent

// startAgent runs a fresh ssh-agent in the foreground and returns its
// socket. The socket lives under os.TempDir rather than t.TempDir: unix
// socket paths are limited to about 100 bytes, and t.TempDir paths, which
// contain the test name, are often longer.
func startAgent(t *testing.T) string {
	t.Helper()
	bin := needTool(t, "ssh-agent")
	dir, err := os.MkdirTemp("", "ka")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s")
	cmd := exec.Command(bin, "-D", "-a", sock)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		t.Fatalf("starting ssh-agent: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		os.RemoveAll(dir)
	})
	// The socket file appears when ssh-agent binds it, a moment before it
	// listens: wait for a connection to be taken, not for the file (on a
	// loaded machine a dial in between is refused).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return sock
		}
		if time.Now().After(deadline) {
			t.Fatalf("ssh-agent socket %s did not appear: %s", sock, stderr.String())
		}
	}
}

// addToAgent adds keys through the agent protocol, as ssh-add does.
func addToAgent(t *testing.T, sock string, keys ...crypto.Signer) {
	t.Helper()
	c := agent.NewClient(dialAgent(t, sock))
	for _, k := range keys {
		if err := c.Add(agent.AddedKey{PrivateKey: k, Comment: "test"}); err != nil {
			t.Fatalf("adding a %T to ssh-agent: %v", k, err)
		}
	}
}

func dialAgent(t *testing.T, sock string) io.ReadWriter {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// agentSigner calls AgentSigner, expecting success, and closes the agent
// connection at the end of the test.
func agentSigner(t *testing.T, sock string, pub ssh.PublicKey) ssh.Signer {
	t.Helper()
	s, closeFn, err := AgentSigner(sock, pub)
	if err != nil {
		t.Fatalf("AgentSigner: %v", err)
	}
	if s == nil || closeFn == nil {
		t.Fatal("AgentSigner returned a nil signer or close function")
	}
	t.Cleanup(func() { closeFn() })
	return s
}

func TestAgentSignerOneKey(t *testing.T) {
	keys := []struct {
		name       string
		key        crypto.Signer
		wantFormat string
	}{
		{"ed25519", newEd25519(t), ssh.KeyAlgoED25519},
		{"ecdsa P-256", newECDSA(t, elliptic.P256()), ssh.KeyAlgoECDSA256},
		// The agent must be asked for SHA-512, not its SHA-1 default.
		{"rsa 3072", rsa3072(), ssh.KeyAlgoRSASHA512},
	}
	for _, k := range keys {
		t.Run(k.name, func(t *testing.T) {
			sock := startAgent(t)
			addToAgent(t, sock, k.key)
			want := signerOf(t, k.key).PublicKey()

			for _, pub := range []ssh.PublicKey{nil, want} {
				s := agentSigner(t, sock, pub)
				if !sameKey(s.PublicKey(), want) {
					t.Fatalf("AgentSigner(pub=%v) found another key", pub != nil)
				}
				content := []byte("login challenge")
				sig, err := Sign(s, DomainLogin, content)
				if err != nil {
					t.Fatalf("Sign through the agent: %v", err)
				}
				var decoded ssh.Signature
				if err := ssh.Unmarshal(sig, &decoded); err != nil {
					t.Fatal(err)
				}
				if decoded.Format != k.wantFormat {
					t.Errorf("agent signature format %s, want %s", decoded.Format, k.wantFormat)
				}
				if err := Verify(want, DomainLogin, content, sig); err != nil {
					t.Errorf("Verify of the agent's signature: %v", err)
				}
				// The agent's own view of the key (an *agent.Key, which
				// holds only the wire form) verifies as well.
				if err := Verify(s.PublicKey(), DomainLogin, content, sig); err != nil {
					t.Errorf("Verify with the agent's public key: %v", err)
				}
			}
		})
	}
}

// TestAgentSignerSSHAdd loads the agent with OpenSSH's own ssh-add, from a
// key file ssh-keygen made, as an officer would.
func TestAgentSignerSSHAdd(t *testing.T) {
	needTool(t, "ssh-keygen")
	sock := startAgent(t)
	path := filepath.Join(t.TempDir(), "id_ed25519")
	run(t, nil, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "officer", "-f", path)
	run(t, []string{"SSH_AUTH_SOCK=" + sock}, "ssh-add", path)

	pubLine, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKey(pubLine)
	if err != nil {
		t.Fatal(err)
	}
	// ssh-add -L lists what the agent holds; ParsePublicKey takes its line.
	listed, err := ParsePublicKey(run(t, []string{"SSH_AUTH_SOCK=" + sock}, "ssh-add", "-L"))
	if err != nil || !sameKey(listed, pub) {
		t.Fatalf("ssh-add -L: %v", err)
	}

	s := agentSigner(t, sock, pub)
	sig, err := Sign(s, DomainApproval, []byte("proposal"))
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(pub, DomainApproval, []byte("proposal"), sig); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestAgentSignerChoosing(t *testing.T) {
	edA, edB := newEd25519(t), newEd25519(t)
	pubA, pubB := signerOf(t, edA).PublicKey(), signerOf(t, edB).PublicKey()
	weakPub := signerOf(t, rsa2048()).PublicKey()

	t.Run("two keys, pub nil, is ambiguous", func(t *testing.T) {
		sock := startAgent(t)
		addToAgent(t, sock, edA, edB)
		s, closeFn, err := AgentSigner(sock, nil)
		if err == nil {
			closeFn()
			t.Fatal("AgentSigner chose one of two keys by itself")
		}
		if !strings.Contains(err.Error(), "2 suitable keys") {
			t.Errorf("error %q does not name the ambiguity", err)
		}
		if s != nil || closeFn != nil {
			t.Error("signer or close function returned with the error")
		}
	})
	t.Run("two keys, pub given, picks it", func(t *testing.T) {
		sock := startAgent(t)
		addToAgent(t, sock, edA, edB)
		for _, want := range []ssh.PublicKey{pubA, pubB} {
			if s := agentSigner(t, sock, want); !sameKey(s.PublicKey(), want) {
				t.Errorf("AgentSigner(%s) found %s", Fingerprint(want), Fingerprint(s.PublicKey()))
			}
		}
	})
	t.Run("pub not in the agent", func(t *testing.T) {
		sock := startAgent(t)
		addToAgent(t, sock, edA)
		_, _, err := AgentSigner(sock, pubB)
		if err == nil {
			t.Fatal("AgentSigner found a key the agent does not hold")
		}
		if !strings.Contains(err.Error(), Fingerprint(pubB)) {
			t.Errorf("error %q does not name the missing key's fingerprint", err)
		}
	})
	t.Run("empty agent", func(t *testing.T) {
		sock := startAgent(t)
		if _, _, err := AgentSigner(sock, nil); err == nil {
			t.Error("AgentSigner found a key in an empty agent")
		}
	})
	t.Run("rsa 2048 is ignored", func(t *testing.T) {
		sock := startAgent(t)
		addToAgent(t, sock, rsa2048())
		// Alone, it does not count as a key at all...
		_, _, err := AgentSigner(sock, nil)
		if err == nil || !strings.Contains(err.Error(), "no suitable key") {
			t.Errorf("agent with only RSA-2048: err = %v, want \"no suitable key\"", err)
		}
		// ...not even when asked for by name...
		if _, _, err := AgentSigner(sock, weakPub); err == nil {
			t.Error("AgentSigner handed out an RSA-2048 key asked for by name")
		}
		// ...and beside a good key, it does not make pub nil ambiguous.
		addToAgent(t, sock, edA)
		if s := agentSigner(t, sock, nil); !sameKey(s.PublicKey(), pubA) {
			t.Error("AgentSigner did not pick the one suitable key")
		}
	})
	t.Run("empty sock", func(t *testing.T) {
		s, closeFn, err := AgentSigner("", nil)
		if err == nil || !strings.Contains(err.Error(), "SSH_AUTH_SOCK") {
			t.Errorf("err = %v, want one that mentions SSH_AUTH_SOCK", err)
		}
		if s != nil || closeFn != nil {
			t.Error("signer or close function returned with the error")
		}
	})
	t.Run("no agent on sock", func(t *testing.T) {
		dir, err := os.MkdirTemp("", "ka")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		if _, _, err := AgentSigner(filepath.Join(dir, "absent"), nil); err == nil {
			t.Error("AgentSigner succeeded with no agent listening")
		}
	})
	t.Run("close ends the connection", func(t *testing.T) {
		sock := startAgent(t)
		addToAgent(t, sock, edA)
		s, closeFn, err := AgentSigner(sock, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := closeFn(); err != nil {
			t.Fatalf("close: %v", err)
		}
		if _, err := Sign(s, DomainLogin, []byte("x")); err == nil {
			t.Error("the signer still signs after its connection was closed")
		}
	})
}

// TestCertSHA256: the SHA-256 of the first certificate's DER, past any
// other PEM block; no certificate, or a broken one, is an error.
func TestCertSHA256(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "alice"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	want := sha256.Sum256(der)
	got, err := CertSHA256(append(keyPEM, certPEM...))
	if err != nil || got != hex.EncodeToString(want[:]) {
		t.Fatalf("CertSHA256 = %q, %v; want %x", got, err, want)
	}
	for name, data := range map[string][]byte{
		"no certificate":     keyPEM,
		"not PEM":            []byte("hello"),
		"broken certificate": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der[:40]}),
	} {
		if _, err := CertSHA256(data); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
