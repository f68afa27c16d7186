package hsm_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/keyrack/keyrack/hsm"
	"github.com/keyrack/keyrack/softhsm"
)

// One fresh SoftHSM token per test run of this package.
var (
	tok *softhsm.Token
	mod *hsm.Module
	// remoteTok is served by p11-kit-server in TestRemoteToken.
	remoteTok *softhsm.Token
)

// The main goroutine keeps the main thread, so TestMain runs there (see
// TestIdleSignerLeavesMainThread).
func init() { runtime.LockOSThread() }

func TestMain(m *testing.M) {
	mainThreadSigner = checkMainThreadSigner()
	os.Exit(run(m))
}

// mainThreadSigner is what became of an idle signer started on the main
// thread, checked before the tests run (only TestMain is on that thread).
var mainThreadSigner error

func checkMainThreadSigner() error {
	started, mainIdle, err := hsm.IdleSignerOnMainThreadForTest()
	switch {
	case err != nil:
		return err
	case !started:
		return errors.New("no signing thread started")
	case mainIdle:
		return errors.New("the main thread was left in SCHED_IDLE")
	}
	return nil
}

// TestIdleSignerLeavesMainThread: an idle signer's goroutine that starts
// on the process's main thread hands over to another thread; the main
// thread keeps its policy (and is not parked for good when the signer
// ends).
func TestIdleSignerLeavesMainThread(t *testing.T) {
	if mainThreadSigner != nil {
		t.Fatal(mainThreadSigner)
	}
}

func run(m *testing.M) int {
	var cleanup func()
	var err error
	// The token TestRemoteToken serves from another process is made first:
	// initializing it loads libsofthsm2.so, which cannot happen here once
	// mod owns the library.
	remoteDir, err := os.MkdirTemp("", "keyrack-hsm-remote-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(remoteDir)
	if remoteTok, err = softhsm.Create(remoteDir, "hsm-remote"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	tok, mod, cleanup, err = softhsm.OpenTemp("hsm-test", func(c *hsm.Config) {
		c.Sessions = 2
		c.RetryInterval = 200 * time.Millisecond
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// TestReopenPINSources replaces mod; close whichever is current.
	defer func() { mod.Close(); cleanup() }()
	return m.Run()
}

// keys are slow to make (RSA-4096 in software): share them between tests.
var (
	keyOnce sync.Once
	signKey *hsm.Key
	keyErr  error
)

func sharedKey(t testing.TB) *hsm.Key {
	t.Helper()
	keyOnce.Do(func() {
		signKey, keyErr = mod.GenerateRSA(context.Background(), hsm.KeySpec{Label: "shared-sign", Bits: 4096})
	})
	if keyErr != nil {
		t.Fatal(keyErr)
	}
	return signKey
}

func signAndVerify(t *testing.T, k crypto.Signer) {
	t.Helper()
	msg := []byte("keyrack " + t.Name())
	d := sha512.Sum512(msg)
	sig, err := k.Sign(rand.Reader, d[:], crypto.SHA512)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	if err := rsa.VerifyPKCS1v15(k.Public().(*rsa.PublicKey), crypto.SHA512, d[:], sig); err != nil {
		t.Fatalf("token signature does not verify with crypto/rsa: %v", err)
	}
}

func TestGenerateFindSignList(t *testing.T) {
	ctx := context.Background()
	k := sharedKey(t)
	info := k.Info()
	if info.Bits != 4096 || info.Type != "RSA" {
		t.Fatalf("generated %s-%d, want RSA-4096", info.Type, info.Bits)
	}
	if !info.Sensitive || info.Extractable || !info.Local || !info.AlwaysSensitive || !info.NeverExtractable {
		t.Fatalf("generated key attributes %+v: want sensitive, not extractable, local", info)
	}
	if !info.Sign || info.Decrypt || info.Unwrap {
		t.Fatalf("generated signing key may sign=%v decrypt=%v unwrap=%v", info.Sign, info.Decrypt, info.Unwrap)
	}
	if info.Origin() != "generated" {
		t.Fatalf("origin %q", info.Origin())
	}
	signAndVerify(t, k)

	// SHA-256 DigestInfo too: the prefix table is not SHA-512 only.
	d := sha256.Sum256([]byte("x"))
	sig, err := k.SignContext(ctx, d[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if err := rsa.VerifyPKCS1v15(info.Public, crypto.SHA256, d[:], sig); err != nil {
		t.Fatal(err)
	}

	byID, err := mod.FindKey(ctx, k.ID())
	if err != nil {
		t.Fatal(err)
	}
	if byID.Info().Public.N.Cmp(info.Public.N) != 0 || byID.Label() != "shared-sign" {
		t.Fatal("FindKey returned another key")
	}
	signAndVerify(t, byID)
	byLabel, err := mod.FindKeyByLabel(ctx, "shared-sign")
	if err != nil {
		t.Fatal(err)
	}
	if string(byLabel.ID()) != string(k.ID()) {
		t.Fatal("FindKeyByLabel returned another key")
	}

	list, err := mod.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ki := range list {
		if string(ki.ID) == string(k.ID()) {
			found = ki.Bits == 4096 && ki.Public.N.Cmp(info.Public.N) == 0 && !ki.Extractable
		}
	}
	if !found {
		t.Fatalf("ListKeys does not show the key correctly: %+v", list)
	}

	if _, err := mod.FindKey(ctx, []byte("no-such-key")); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("FindKey(missing) = %v, want ErrKeyNotFound", err)
	}
	if _, err := mod.FindKeyByLabel(ctx, "no-such-key"); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("FindKeyByLabel(missing) = %v, want ErrKeyNotFound", err)
	}
}

func TestSignRejectsBadInput(t *testing.T) {
	k := sharedKey(t)
	d := sha512.Sum512([]byte("x"))
	if _, err := k.Sign(nil, d[:10], crypto.SHA512); !errors.Is(err, hsm.ErrInvalidArgument) {
		t.Fatalf("short digest: %v", err)
	}
	if _, err := k.Sign(nil, d[:], &rsa.PSSOptions{Hash: crypto.SHA512}); !errors.Is(err, hsm.ErrUnsupported) {
		t.Fatalf("PSS: %v", err)
	}
	if _, err := k.Sign(nil, d[:20], crypto.SHA1); !errors.Is(err, hsm.ErrUnsupported) {
		t.Fatalf("SHA-1: %v", err)
	}
}

func TestNonExtractable(t *testing.T) {
	ctx := context.Background()
	k := sharedKey(t)
	err := mod.RawForTest(ctx, func(p hsm.API, sh pkcs11.SessionHandle, _ uint) error {
		hs := findPriv(t, p, sh, k.ID())
		_, err := p.GetAttributeValue(sh, hs, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_PRIVATE_EXPONENT, nil)})
		if !errors.Is(err, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_SENSITIVE)) {
			t.Errorf("reading CKA_PRIVATE_EXPONENT: %v, want CKR_ATTRIBUTE_SENSITIVE", err)
		}
		// A session AES key that may wrap: the token must still refuse to
		// wrap the private key out.
		aes, err := p.CreateObject(sh, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
			pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE, make([]byte, 32)),
		})
		if err != nil {
			return err
		}
		defer p.DestroyObject(sh, aes)
		_, err = p.WrapKey(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(0x210A /* CKM_AES_KEY_WRAP_PAD */, nil)}, aes, hs)
		if !errors.Is(err, pkcs11.Error(pkcs11.CKR_KEY_UNEXTRACTABLE)) {
			t.Errorf("C_WrapKey: %v, want CKR_KEY_UNEXTRACTABLE", err)
		}
		// Nor may anyone loosen the key afterwards.
		for _, a := range []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false),
		} {
			if err := p.SetAttributeValue(sh, hs, []*pkcs11.Attribute{a}); err == nil {
				t.Errorf("setting attribute 0x%x on the private key succeeded", a.Type)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func findPriv(t *testing.T, p hsm.API, sh pkcs11.SessionHandle, id []byte) pkcs11.ObjectHandle {
	t.Helper()
	if err := p.FindObjectsInit(sh, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}); err != nil {
		t.Fatal(err)
	}
	hs, _, err := p.FindObjects(sh, 2)
	p.FindObjectsFinal(sh)
	if err != nil || len(hs) != 1 {
		t.Fatalf("finding private key: %v, %d objects", err, len(hs))
	}
	return hs[0]
}
