package hsm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyrack/keyrack/hsm"
	"github.com/keyrack/keyrack/hsm/keywrap"
	"github.com/keyrack/keyrack/softhsm"
)

// TestRemoteToken runs what the appliance does with a token through
// p11-kit's RPC: a SoftHSM token exported by p11-kit-server on a unix
// socket, opened here through p11-kit-client.so (this process loads the
// client only for it; the in-process token of the other tests is another
// library). Sessions, login, RSA-4096 and ECDSA P-256 generation, find by
// CKA_ID, signing, the two-call import, and recovery after the server is
// killed and started again.
func TestRemoteToken(t *testing.T) {
	if _, err := softhsm.ServerPath(); err != nil {
		t.Skip(err) // only when p11-kit cannot be installed (make deps installs it)
	}
	dir := t.TempDir()
	srv, err := softhsm.Serve(remoteTok, filepath.Join(dir, "run", "token.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Kill()
	t.Setenv(softhsm.ClientAddressEnv, srv.Address())
	cfg := srv.Config()
	cfg.Sessions = 2
	cfg.RetryInterval = 100 * time.Millisecond
	rm, err := hsm.Open(cfg)
	if err != nil {
		t.Fatalf("open through p11-kit-client: %v", err)
	}
	defer rm.Close()
	ctx := context.Background()
	if st := rm.Check(ctx); !st.Up || st.Label != "hsm-remote" {
		t.Fatalf("health through the RPC: %+v", st)
	}

	start := time.Now()
	k, err := rm.GenerateRSA(ctx, hsm.KeySpec{Label: "remote-sign", Bits: 4096})
	if err != nil {
		t.Fatalf("generate RSA-4096: %v", err)
	}
	t.Logf("RSA-4096 generated through the RPC in %v", time.Since(start))
	if info := k.Info(); !info.Sensitive || info.Extractable || !info.Local || info.Bits != 4096 {
		t.Fatalf("remote key attributes %+v", info)
	}
	signAndVerify(t, k)
	byID, err := rm.FindKey(ctx, k.ID())
	if err != nil {
		t.Fatalf("find by CKA_ID: %v", err)
	}
	signAndVerify(t, byID)

	ec, err := rm.GenerateECDSA(ctx, hsm.KeySpec{Label: "remote-audit", Usage: hsm.UsageSign})
	if err != nil {
		t.Fatalf("generate ECDSA P-256: %v", err)
	}
	d := sha256.Sum256([]byte("checkpoint"))
	sig, err := ec.SignContext(ctx, d[:], crypto.SHA256)
	if err != nil {
		t.Fatalf("ECDSA sign: %v", err)
	}
	if !ecdsa.VerifyASN1(ec.Info().EC, d[:], sig) {
		t.Fatal("remote ECDSA signature does not verify")
	}

	t.Run("import", func(t *testing.T) {
		t.Logf("import method through the RPC: %s", rm.ImportMethod())
		ik, err := rm.GenerateRSA(ctx, hsm.KeySpec{Label: "remote-import", Bits: 3072, Usage: hsm.UsageUnwrap})
		if err != nil {
			t.Fatal(err)
		}
		brand, err := rsa.GenerateKey(rand.Reader, 4096)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(brand)
		if err != nil {
			t.Fatal(err)
		}
		blob, err := keywrap.Wrap(ik.Info().Public, der)
		if err != nil {
			t.Fatal(err)
		}
		// Measured with p11-kit 0.24.1: the RPC lists no AES key wrap at
		// all (the token behind it has 0x2109 and 0x210A), and an unwrap
		// with 0x210A answers CKR_MECHANISM_INVALID. The import must say
		// so before it makes anything, not half-run.
		objects := countKeys(t, rm)
		imp, err := rm.ImportWrapped(ctx, ik, blob, hsm.ImportSpec{Label: "remote-imported"})
		if err == nil {
			// A later p11-kit that forwards them: then the import must
			// be the real thing.
			t.Logf("this p11-kit forwards the import's unwrap mechanisms (%s)", rm.ImportMethod())
			if imp.Info().Public.N.Cmp(brand.N) != 0 || imp.Info().Origin() != "imported" {
				t.Fatalf("imported key %+v", imp.Info())
			}
			signAndVerify(t, imp)
			return
		}
		if !errors.Is(err, hsm.ErrNoUnwrapMechanism) || !errors.Is(err, hsm.ErrUnsupported) {
			t.Fatalf("import through the RPC: %v, want ErrNoUnwrapMechanism", err)
		}
		t.Logf("import through the RPC refused up front: %v; method %q", err, rm.ImportMethod())
		if after := countKeys(t, rm); after != objects {
			t.Fatalf("a refused import left %d objects behind", after-objects)
		}
		if !rm.Up() {
			t.Fatal("a bad blob took the token down")
		}
	})

	t.Run("server killed and started again", func(t *testing.T) {
		before := rm.Recoveries()
		srv.Kill()
		start := time.Now()
		_, err := k.SignContext(ctx, make([]byte, 64), crypto.SHA512)
		took := time.Since(start)
		t.Logf("first sign after the server died: %v in %v", err, took)
		if !errors.Is(err, hsm.ErrTokenUnavailable) {
			t.Fatalf("sign with the server dead: %v, want ErrTokenUnavailable", err)
		}
		if took > time.Second {
			t.Fatalf("sign with the server dead took %v", took)
		}
		if st := rm.Check(ctx); st.Up || st.Error == "" {
			t.Fatalf("health with the server dead: %+v", st)
		}
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		restarted := time.Now()
		digest := sha512.Sum512([]byte("after"))
		for {
			sig, err := k.SignContext(ctx, digest[:], crypto.SHA512)
			if err == nil {
				if err := rsa.VerifyPKCS1v15(k.Info().Public, crypto.SHA512, digest[:], sig); err != nil {
					t.Fatal(err)
				}
				break
			}
			if time.Since(restarted) > 5*time.Second {
				t.Fatalf("signing did not resume within 5s of the server's restart: %v", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("signing resumed %v after the server was started again (%d recoveries)", time.Since(restarted), rm.Recoveries()-before)
		if st := rm.Check(ctx); !st.Up {
			t.Fatalf("health after the restart: %+v", st)
		}
	})
	if _, err := os.Stat(srv.Socket); err != nil {
		t.Fatal(err)
	}
}

func countKeys(t *testing.T, m *hsm.Module) int {
	t.Helper()
	keys, err := m.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(keys)
}
