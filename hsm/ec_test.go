package hsm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/keyrack/keyrack/hsm"
)

// TestECDSAKey: a P-256 key made in the token is sign-only, sensitive and
// never extractable, is found again by its CKA_ID with the same public
// key, and its signatures verify with crypto/ecdsa.
func TestECDSAKey(t *testing.T) {
	ctx := context.Background()
	k, err := mod.GenerateECDSA(ctx, hsm.KeySpec{Label: "ec-" + t.Name(), Usage: hsm.UsageSign})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mod.DestroyKey(context.Background(), k.ID()) })
	info := k.Info()
	if info.Type != "EC" || info.Bits != 256 || info.EC == nil {
		t.Fatalf("generated %s-%d (public %v), want EC-256", info.Type, info.Bits, info.EC)
	}
	if !info.Sensitive || info.Extractable || !info.Local || !info.NeverExtractable || !info.Sign || info.Unwrap || info.Decrypt {
		t.Fatalf("attributes %+v: want sign-only, sensitive, never extractable, local", info)
	}
	d := sha256.Sum256([]byte("checkpoint"))
	sig, err := k.SignContext(ctx, d[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(info.EC, d[:], sig) {
		t.Fatal("token ECDSA signature does not verify with crypto/ecdsa")
	}
	other := sha256.Sum256([]byte("another"))
	if ecdsa.VerifyASN1(info.EC, other[:], sig) {
		t.Fatal("the signature verifies for another digest")
	}
	if _, err := k.SignContext(ctx, d[:10], crypto.SHA256); !errors.Is(err, hsm.ErrInvalidArgument) {
		t.Fatalf("short digest: %v", err)
	}

	again, err := mod.FindKey(ctx, k.ID())
	if err != nil {
		t.Fatal(err)
	}
	if !again.Info().EC.Equal(info.EC) {
		t.Fatal("FindKey returned another public key")
	}
	if sig, err = again.SignContext(ctx, d[:], crypto.SHA256); err != nil || !ecdsa.VerifyASN1(info.EC, d[:], sig) {
		t.Fatalf("signing with the key found again: %v", err)
	}

	err = mod.RawForTest(ctx, func(p hsm.API, sh pkcs11.SessionHandle, _ uint) error {
		h := findPriv(t, p, sh, k.ID())
		if _, err := p.GetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)}); !errors.Is(err, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_SENSITIVE)) {
			t.Errorf("reading CKA_VALUE of the EC private key: %v, want CKR_ATTRIBUTE_SENSITIVE", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	if _, err := mod.GenerateECDSA(ctx, hsm.KeySpec{Label: "ec-unwrap", Usage: hsm.UsageUnwrap}); !errors.Is(err, hsm.ErrInvalidArgument) {
		t.Fatalf("EC unwrap key: %v, want ErrInvalidArgument", err)
	}
	if _, err := mod.GenerateECDSA(ctx, hsm.KeySpec{Label: "ec-" + t.Name()}); !errors.Is(err, hsm.ErrKeyExists) {
		t.Fatalf("label reused: %v, want ErrKeyExists", err)
	}
}
