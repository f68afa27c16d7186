package assertion_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapcore/snapd/asserts"
	"golang.org/x/crypto/openpgp/packet"

	"github.com/keyrack/keyrack/appliance/assertion"
	"github.com/keyrack/keyrack/hsm"
	"github.com/keyrack/keyrack/softhsm"
)

// Keys are made once per test binary: RSA-4096 generation takes seconds.
var (
	rootPriv   *rsa.PrivateKey // the test root authority (trusted)
	brandPriv  *rsa.PrivateKey // the brand's signing key
	devicePriv *rsa.PrivateKey // a device key (RSA-2048, like small devices may have)
	hsmKey     *hsm.Key        // a brand key inside a SoftHSM token
)

const (
	rootID  = "testroot"
	brandID = "brand-x"
)

// since is when the test accounts and keys start being valid; every
// assertion's timestamp must be after it.
var since = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// fixed is the timestamp the examples carry.
var fixed = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func TestMain(m *testing.M) {
	type result struct {
		k   *rsa.PrivateKey
		err error
	}
	gen := func(bits int) <-chan result {
		c := make(chan result, 1)
		go func() {
			k, err := rsa.GenerateKey(rand.Reader, bits)
			c <- result{k, err}
		}()
		return c
	}
	root, brand, dev := gen(4096), gen(4096), gen(2048)
	for _, p := range []struct {
		c   <-chan result
		dst **rsa.PrivateKey
	}{{root, &rootPriv}, {brand, &brandPriv}, {dev, &devicePriv}} {
		r := <-p.c
		if r.err != nil {
			fmt.Fprintln(os.Stderr, "generating test keys:", r.err)
			os.Exit(1)
		}
		*p.dst = r.k
	}
	// A real token too: the brand key that signs in token_test.go lives in
	// a fresh SoftHSM token.
	_, mod, cleanup, err := softhsm.OpenTemp("assertion-test", nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "opening a SoftHSM token:", err)
		os.Exit(1)
	}
	if hsmKey, err = mod.GenerateRSA(context.Background(), hsm.KeySpec{Label: "brand", Bits: 4096}); err != nil {
		fmt.Fprintln(os.Stderr, "generating the token key:", err)
		cleanup()
		os.Exit(1)
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// tokenKey stands for a key inside a PKCS#11 token: the package gets only
// Public and Sign, never the *rsa.PrivateKey, and Sign refuses anything but
// a SHA-512 digest (what CKM_RSA_PKCS with the SHA-512 DigestInfo signs).
type tokenKey struct {
	priv  *rsa.PrivateKey
	signs atomic.Int64
	// signWith, when set, signs instead of priv: a token returning
	// signatures of another key than it claims.
	signWith *rsa.PrivateKey
	// fail, when set, is returned by Sign: a token gone away.
	fail error
	// flipAfter > 0 flips a bit of every signature after the first
	// flipAfter ones: a token that develops a fault.
	flipAfter int64
}

func (k *tokenKey) Public() crypto.PublicKey { return &k.priv.PublicKey }

func (k *tokenKey) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	k.signs.Add(1)
	if opts.HashFunc() != crypto.SHA512 || len(digest) != 64 {
		return nil, fmt.Errorf("token key: asked to sign %d bytes with hash %v, only SHA-512 digests are expected", len(digest), opts.HashFunc())
	}
	if k.fail != nil {
		return nil, k.fail
	}
	priv := k.priv
	if k.signWith != nil {
		priv = k.signWith
	}
	sig, err := rsa.SignPKCS1v15(r, priv, crypto.SHA512, digest)
	if err == nil && k.flipAfter > 0 && k.signs.Load() > k.flipAfter {
		sig[len(sig)/2] ^= 0x10
	}
	return sig, err
}

func brandToken() *tokenKey { return &tokenKey{priv: brandPriv} }

func brandSigner(t testing.TB, opts ...assertion.Option) *assertion.Signer {
	t.Helper()
	s, err := assertion.NewSigner(brandToken(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func brandPub() asserts.PublicKey  { return asserts.RSAPublicKey(&brandPriv.PublicKey) }
func devicePub() asserts.PublicKey { return asserts.RSAPublicKey(&devicePriv.PublicKey) }

// rootSign signs as the test root, through snapd's own database signing.
func rootSign(t testing.TB, typ *asserts.AssertionType, headers map[string]any, body []byte) asserts.Assertion {
	t.Helper()
	rk := asserts.RSAPrivateKey(rootPriv)
	db, err := asserts.OpenDatabase(&asserts.DatabaseConfig{KeypairManager: asserts.NewMemoryKeypairManager()})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.ImportKey(rk); err != nil {
		t.Fatal(err)
	}
	a, err := db.Sign(typ, headers, body, rk.PublicKey().ID())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func account(t testing.TB, id string) asserts.Assertion {
	return rootSign(t, asserts.AccountType, map[string]any{
		"authority-id": rootID,
		"account-id":   id,
		"display-name": id,
		"validation":   "verified",
		"timestamp":    since.Format(time.RFC3339),
	}, nil)
}

// accountKey is the root's account-key for pub; constraints make it a
// role-scoped (format 1) key.
func accountKey(t testing.TB, accountID, name string, pub asserts.PublicKey, constraints []any) asserts.Assertion {
	t.Helper()
	body, err := asserts.EncodePublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	h := map[string]any{
		"authority-id":        rootID,
		"account-id":          accountID,
		"name":                name,
		"public-key-sha3-384": pub.ID(),
		"since":               since.Format(time.RFC3339),
	}
	if constraints != nil {
		h["format"] = "1"
		h["constraints"] = constraints
	}
	return rootSign(t, asserts.AccountKeyType, h, body)
}

// deviceDB is what a device trusts: the test root only, plus the brand's
// account and the account-key for the brand key (scoped by constraints
// when given).
func deviceDB(t testing.TB, constraints []any) *asserts.Database {
	t.Helper()
	rootPub := asserts.RSAPublicKey(&rootPriv.PublicKey)
	db, err := asserts.OpenDatabase(&asserts.DatabaseConfig{
		Backstore: asserts.NewMemoryBackstore(),
		Trusted:   []asserts.Assertion{account(t, rootID), accountKey(t, rootID, "root", rootPub, nil)},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []asserts.Assertion{account(t, brandID), accountKey(t, brandID, "serials", brandPub(), constraints)} {
		if err := db.Add(a); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

// signatureTime reads the creation time out of an encoded signature.
func signatureTime(t testing.TB, a asserts.Assertion) time.Time {
	t.Helper()
	_, enc := a.Signature()
	raw, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(strings.TrimSpace(string(enc)), "\n", ""))
	if err != nil || len(raw) < 2 || raw[0] != 1 {
		t.Fatalf("signature encoding: %v", err)
	}
	p, err := packet.Read(bytes.NewReader(raw[1:]))
	if err != nil {
		t.Fatal(err)
	}
	sig, ok := p.(*packet.Signature)
	if !ok {
		t.Fatalf("signature packet is a %T", p)
	}
	return sig.CreationTime
}

func mustBeInvalid(t *testing.T, err error, want ...string) {
	t.Helper()
	if !errors.Is(err, assertion.ErrInvalidHeaders) {
		t.Fatalf("error %v, want ErrInvalidHeaders", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q does not mention %q", err, w)
		}
	}
}
