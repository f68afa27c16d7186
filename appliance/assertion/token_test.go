package assertion_test

import (
	"bytes"
	"context"
	"crypto"
	"testing"
	"time"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance/assertion"
)

// These tests sign through a key inside a real SoftHSM token (the rest of
// the package's tests use an in-memory stand-in to inject faults).

func hsmSigner(t testing.TB) *assertion.Signer {
	t.Helper()
	s, err := assertion.NewSigner(hsmKey.WithContext(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func hsmPub() asserts.PublicKey { return asserts.RSAPublicKey(hsmKey.Info().Public) }

// hsmDeviceDB trusts the test root only, plus the brand account and the
// account-key of the token key.
func hsmDeviceDB(t testing.TB, constraints []any) *asserts.Database {
	t.Helper()
	db, err := asserts.OpenDatabase(&asserts.DatabaseConfig{
		Backstore: asserts.NewMemoryBackstore(),
		Trusted:   []asserts.Assertion{account(t, rootID), accountKey(t, rootID, "root", asserts.RSAPublicKey(&rootPriv.PublicKey), nil)},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []asserts.Assertion{account(t, brandID), accountKey(t, brandID, "token", hsmPub(), constraints)} {
		if err := db.Add(a); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

func TestEveryTypeThroughSoftHSM(t *testing.T) {
	s := hsmSigner(t)
	db := hsmDeviceDB(t, nil)
	until := fixed.AddDate(1, 0, 0)
	examples := map[string]func() (assertion.Signed, error){
		"serial": func() (assertion.Signed, error) {
			return s.Serial(assertion.Serial{BrandID: brandID, Model: "foo-1", Serial: "T-1", DeviceKey: devicePub(), Timestamp: fixed, Body: []byte("hw: x\n")})
		},
		"model core22": func() (assertion.Signed, error) {
			return s.Model(brandID, map[string]any{"model": "foo-22", "architecture": "amd64", "base": "core22", "grade": "signed",
				"timestamp": fixed.Format(time.RFC3339), "snaps": []any{
					map[string]any{"name": "pc", "id": "UqFziVZDHLSyO3TqSWgNBoAdHbLI4dAH", "type": "gadget", "default-channel": "22/stable"},
					map[string]any{"name": "pc-kernel", "id": "pYVQrBcKmBa0mZ4CCN7ExT6jH8rY1hza", "type": "kernel", "default-channel": "22/stable"},
				}}, nil)
		},
		"system-user": func() (assertion.Signed, error) {
			return s.SystemUser(assertion.SystemUser{BrandID: brandID, Email: "ops@example.com", Username: "ops", Name: "Ops",
				Models: []string{"foo-1"}, Serials: []string{"T-1"}, Password: "pw", Since: fixed, Until: until})
		},
		"preseed": func() (assertion.Signed, error) {
			return s.Preseed(assertion.Preseed{BrandID: brandID, Model: "foo-22", SystemLabel: "20261126",
				ArtifactSHA3384: "KPIl7M4vQ9d4AUjkoU41TGAwtOMLc_bWUCeW8AvdRWD4_xcP60Oo4ABs1No7BZsO", Timestamp: fixed,
				Snaps: []assertion.PreseedSnap{{Name: "pc", ID: "UqFziVZDHLSyO3TqSWgNBoAdHbLI4dAH", Revision: 1}}})
		},
	}
	for name, sign := range examples {
		t.Run(name, func(t *testing.T) {
			sg, err := sign()
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Check(sg.Assertion); err != nil {
				t.Fatalf("snapd refuses it: %v", err)
			}
			// One changed byte in a header and snapd refuses it.
			bad := bytes.Replace(sg.Bytes, []byte("brand-id: "+brandID), []byte("brand-id: brand-y"), 1)
			if a, err := asserts.Decode(bad); err == nil && db.Check(a) == nil {
				t.Fatal("tampered assertion accepted")
			}
		})
	}
	akr, err := s.AccountKeyRequest(brandID, "token-key", fixed, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := asserts.SignatureCheck(akr.Assertion, hsmPub()); err != nil {
		t.Fatal(err)
	}
}

func TestScopedTokenKeyAsSnapdDecides(t *testing.T) {
	s := hsmSigner(t)
	db := hsmDeviceDB(t, []any{map[string]any{"headers": map[string]any{"type": "serial", "model": "foo-.*"}}})
	for model, accept := range map[string]bool{"foo-1": true, "bar-1": false, "xfoo-1": false} {
		sg, err := s.Serial(assertion.Serial{BrandID: brandID, Model: model, Serial: "S-" + model, DeviceKey: devicePub(), Timestamp: fixed})
		if err != nil {
			t.Fatal(err)
		}
		if got := db.Check(sg.Assertion) == nil; got != accept {
			t.Errorf("serial for %s: accepted %v, want %v", model, got, accept)
		}
	}
}

// BenchmarkTokenSerialVsRaw prints, in one run and at the same concurrency
// (GOMAXPROCS callers), raw token signatures per second and complete serial
// assertions per second through the token.
func BenchmarkTokenSerialVsRaw(b *testing.B) {
	ctx := context.Background()
	b.Run("raw-token-sign", func(b *testing.B) {
		digest := make([]byte, 64)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := hsmKey.SignContext(ctx, digest, crypto.SHA512); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sig/s")
	})
	b.Run("serial-assertion", func(b *testing.B) {
		s := hsmSigner(b)
		in := assertion.Serial{BrandID: brandID, Model: "foo-1", Serial: "SN-1", DeviceKey: devicePub(), Timestamp: time.Now()}
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Serial(in); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "serial/s")
	})
}
