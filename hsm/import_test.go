package hsm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"errors"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/keyrack/keyrack/hsm"
	"github.com/keyrack/keyrack/hsm/keywrap"
)

var (
	importOnce sync.Once
	importKey  *hsm.Key
	outside    *rsa.PrivateKey // a brand key made outside the appliance
	importErr  error
)

func importFixtures(t *testing.T) (*hsm.Key, *rsa.PrivateKey) {
	t.Helper()
	importOnce.Do(func() {
		importKey, importErr = mod.GenerateRSA(context.Background(), hsm.KeySpec{Label: "import-key", Bits: 3072, Usage: hsm.UsageUnwrap})
		if importErr == nil {
			outside, importErr = rsa.GenerateKey(rand.Reader, 4096)
		}
	})
	if importErr != nil {
		t.Fatal(importErr)
	}
	// The module may have been reopened by another test: find it again.
	k, err := mod.FindKey(context.Background(), importKey.ID())
	if err != nil {
		t.Fatal(err)
	}
	return k, outside
}

func wrapPKCS8(t *testing.T, to *rsa.PublicKey, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	blob, err := keywrap.Wrap(to, der)
	if err != nil {
		t.Fatal(err)
	}
	return blob
}

func countObjects(t *testing.T) int {
	t.Helper()
	n := 0
	err := mod.RawForTest(context.Background(), func(p hsm.API, sh pkcs11.SessionHandle, _ uint) error {
		if err := p.FindObjectsInit(sh, nil); err != nil {
			return err
		}
		defer p.FindObjectsFinal(sh)
		for {
			hs, _, err := p.FindObjects(sh, 100)
			if err != nil {
				return err
			}
			if len(hs) == 0 {
				return nil
			}
			n += len(hs)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestImportWrapped(t *testing.T) {
	ctx := context.Background()
	ik, brand := importFixtures(t)
	if m := mod.ImportMethod(); m != "CKM_RSA_PKCS_OAEP(SHA-1)+0x210A" {
		t.Logf("import method: %s", m)
	}
	blob := wrapPKCS8(t, ik.Info().Public, brand)
	k, err := mod.ImportWrapped(ctx, ik, blob, hsm.ImportSpec{Label: "imported-brand"})
	if err != nil {
		t.Fatal(err)
	}
	// The package's token outlives the test: leave its label free for the
	// next run (go test -count).
	t.Cleanup(func() {
		if err := mod.DestroyKey(ctx, k.ID()); err != nil {
			t.Error(err)
		}
	})
	info := k.Info()
	if info.Public.N.Cmp(brand.N) != 0 {
		t.Fatal("imported key has another modulus")
	}
	if !info.Sensitive || info.Extractable || info.Local || !info.Sign || info.Decrypt || info.Unwrap {
		t.Fatalf("imported key attributes %+v", info)
	}
	if info.Origin() != "imported" {
		t.Fatalf("origin %q", info.Origin())
	}
	// The signature verifies with the original public key.
	d := sha512.Sum512([]byte("serial assertion"))
	sig, err := k.Sign(nil, d[:], crypto.SHA512)
	if err != nil {
		t.Fatal(err)
	}
	if err := rsa.VerifyPKCS1v15(&brand.PublicKey, crypto.SHA512, d[:], sig); err != nil {
		t.Fatal(err)
	}
	err = mod.RawForTest(ctx, func(p hsm.API, sh pkcs11.SessionHandle, _ uint) error {
		h := findPriv(t, p, sh, k.ID())
		if _, err := p.GetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_PRIVATE_EXPONENT, nil)}); !errors.Is(err, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_SENSITIVE)) {
			t.Errorf("private exponent of an imported key: %v", err)
		}
		// Its public-key object exists, and no AES key was left behind.
		if err := p.FindObjectsInit(sh, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_ID, k.ID()),
		}); err != nil {
			return err
		}
		hs, _, err := p.FindObjects(sh, 2)
		p.FindObjectsFinal(sh)
		if err != nil || len(hs) != 1 {
			t.Errorf("public-key object: %v, %d found", err, len(hs))
		}
		if err := p.FindObjectsInit(sh, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY)}); err != nil {
			return err
		}
		hs, _, err = p.FindObjects(sh, 2)
		p.FindObjectsFinal(sh)
		if err != nil || len(hs) != 0 {
			t.Errorf("secret keys left in the token: %d (%v)", len(hs), err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Refuse to overwrite: same blob under the same label.
	if _, err := mod.ImportWrapped(ctx, ik, blob, hsm.ImportSpec{Label: "imported-brand"}); !errors.Is(err, hsm.ErrKeyExists) {
		t.Fatalf("import under an existing label: %v", err)
	}
}

func TestImportRefusesAndLeavesNothing(t *testing.T) {
	ctx := context.Background()
	ik, brand := importFixtures(t)
	otherImport, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		t.Fatal(err)
	}
	small, _ := rsa.GenerateKey(rand.Reader, 2048)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good := wrapPKCS8(t, ik.Info().Public, brand)
	tampered := append([]byte(nil), good...)
	tampered[len(tampered)-9] ^= 0x40
	tamperedHead := append([]byte(nil), good...)
	tamperedHead[5] ^= 1
	der, _ := x509.MarshalPKCS8PrivateKey(brand)
	garbageKey, _ := keywrap.Wrap(ik.Info().Public, der[:len(der)/2])

	for name, tc := range map[string]struct {
		blob []byte
		want error
	}{
		"another appliance": {wrapPKCS8(t, &otherImport.PublicKey, brand), hsm.ErrBadWrappedKey},
		"tampered KWP":      {tampered, hsm.ErrBadWrappedKey},
		"tampered OAEP":     {tamperedHead, hsm.ErrBadWrappedKey},
		"truncated":         {good[:len(good)-8], hsm.ErrBadWrappedKey},
		"too short":         {good[:100], hsm.ErrBadWrappedKey},
		"half a PKCS#8":     {garbageKey, hsm.ErrBadWrappedKey},
		"RSA-2048":          {wrapPKCS8(t, ik.Info().Public, small), hsm.ErrKeyTooSmall},
		"EC key":            {wrapPKCS8(t, ik.Info().Public, ec), nil},
	} {
		t.Run(name, func(t *testing.T) {
			before := countObjects(t)
			_, err := mod.ImportWrapped(ctx, ik, tc.blob, hsm.ImportSpec{Label: "refused-" + name})
			if err == nil {
				t.Fatal("imported")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if after := countObjects(t); after != before {
				t.Fatalf("token had %d objects before, %d after a refused import", before, after)
			}
			t.Logf("refused: %v", err)
		})
	}
	// A signing key cannot act as import key.
	if _, err := mod.ImportWrapped(ctx, sharedKey(t), good, hsm.ImportSpec{Label: "x"}); !errors.Is(err, hsm.ErrInvalidArgument) {
		t.Fatalf("signing key as import key: %v", err)
	}
}
