package hsm_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/keyrack/keyrack/hsm"
)

func TestRecoverAfterLogout(t *testing.T) {
	k := sharedKey(t)
	signAndVerify(t, k)
	before := mod.Recoveries()
	err := mod.RawForTest(context.Background(), func(p hsm.API, sh pkcs11.SessionHandle, _ uint) error {
		return p.Logout(sh)
	})
	if err != nil {
		t.Fatal(err)
	}
	signAndVerify(t, k) // must recover by itself
	if mod.Recoveries() == before {
		t.Fatal("signing after a logout worked without a recovery: the logout did not happen")
	}
	if st := mod.Check(context.Background()); !st.Up {
		t.Fatalf("after recovery: %+v", st)
	}
}

func TestRecoverAfterFinalizeInitialize(t *testing.T) {
	k := sharedKey(t)
	p := mod.LibraryForTest()
	before := mod.Recoveries()
	if err := p.Finalize(); err != nil {
		t.Fatal(err)
	}
	if err := p.Initialize(); err != nil {
		t.Fatal(err)
	}
	signAndVerify(t, k)
	if mod.Recoveries() == before {
		t.Fatal("no recovery after C_Finalize/C_Initialize")
	}
}

func TestRecoverAfterFinalizeOnly(t *testing.T) {
	k := sharedKey(t)
	if err := mod.LibraryForTest().Finalize(); err != nil {
		t.Fatal(err)
	}
	// The library is now uninitialized: recovery must initialize it.
	signAndVerify(t, k)
}

func TestRecoverUnderConcurrentLoad(t *testing.T) {
	k := sharedKey(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	stop := make(chan struct{})
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				d := make([]byte, 64)
				if _, err := k.SignContext(ctx, d, cryptoSHA512); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	_ = mod.RawForTest(ctx, func(p hsm.API, sh pkcs11.SessionHandle, _ uint) error { return p.Logout(sh) })
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a concurrent signer saw: %v", err)
	}
	signAndVerify(t, k)
}

// TestTokenGoneAndBack moves the token's storage away under the running
// module: callers must get ErrTokenUnavailable quickly (no hang), the
// health check must say why, and signing must resume once it is back.
func TestTokenGoneAndBack(t *testing.T) {
	k := sharedKey(t)
	signAndVerify(t, k)
	tokens := filepath.Join(tok.Dir, "tokens")
	away := filepath.Join(tok.Dir, "tokens-away")
	if err := os.Rename(tokens, away); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := os.Rename(away, tokens); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer restore()

	ctx := context.Background()
	// A signature may still come from a cached key in the library; what
	// must not happen is a hang or an error of the wrong kind.
	var lastErr error
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		start := time.Now()
		_, lastErr = k.SignContext(ctx, make([]byte, 64), cryptoSHA512)
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("a sign on a vanished token took %v", took)
		}
		if lastErr != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !errors.Is(lastErr, hsm.ErrTokenUnavailable) && !errors.Is(lastErr, hsm.ErrKeyNotFound) {
		t.Fatalf("sign with the token gone: %v, want ErrTokenUnavailable", lastErr)
	}
	st := mod.Check(ctx)
	if st.Up || st.Error == "" {
		t.Fatalf("health with the token gone: %+v", st)
	}
	// While down, calls fail fast instead of re-trying the token each time.
	start := time.Now()
	for i := 0; i < 20; i++ {
		if _, err := k.SignContext(ctx, make([]byte, 64), cryptoSHA512); err == nil {
			t.Fatal("signed with the token gone")
		}
	}
	t.Logf("20 calls on a down token took %v; health said %q", time.Since(start), st.Error)

	restore()
	deadline = time.Now().Add(10 * time.Second)
	for {
		_, err := k.SignContext(ctx, make([]byte, 64), cryptoSHA512)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("signing did not resume after the token came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	signAndVerify(t, k)
	if st := mod.Check(ctx); !st.Up {
		t.Fatalf("health after the token came back: %+v", st)
	}
}

func TestBusyAndCancel(t *testing.T) {
	k := sharedKey(t)
	defer mod.SetAcquireTimeoutForTest(100 * time.Millisecond)()
	give := mod.HoldSessionsForTest(mod.Sessions())
	_, err := k.SignContext(context.Background(), make([]byte, 64), cryptoSHA512)
	if !errors.Is(err, hsm.ErrBusy) {
		t.Errorf("all sessions held: %v, want ErrBusy", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := k.SignContext(ctx, make([]byte, 64), cryptoSHA512); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v, want context.Canceled", err)
	}
	give()
	signAndVerify(t, k)
}

func TestRefuseOverwriteAndDestroy(t *testing.T) {
	ctx := context.Background()
	k := sharedKey(t)
	if _, err := mod.GenerateRSA(ctx, hsm.KeySpec{Label: k.Label(), Bits: 2048}); !errors.Is(err, hsm.ErrKeyExists) {
		t.Fatalf("same label: %v, want ErrKeyExists", err)
	}
	if _, err := mod.GenerateRSA(ctx, hsm.KeySpec{Label: "other", ID: k.ID(), Bits: 2048}); !errors.Is(err, hsm.ErrKeyExists) {
		t.Fatalf("same id: %v, want ErrKeyExists", err)
	}
	if _, err := mod.GenerateRSA(ctx, hsm.KeySpec{Label: "small", Bits: 1024}); !errors.Is(err, hsm.ErrInvalidArgument) {
		t.Fatalf("1024 bits: %v, want ErrInvalidArgument", err)
	}
	// An unwrap-only key: it must refuse to sign.
	u, err := mod.GenerateRSA(ctx, hsm.KeySpec{Label: "unwrap-only", Bits: 2048, Usage: hsm.UsageUnwrap})
	if err != nil {
		t.Fatal(err)
	}
	if ui := u.Info(); ui.Sign || !ui.Unwrap || ui.Decrypt {
		t.Fatalf("unwrap key usage %+v", ui)
	}
	if _, err := u.SignContext(ctx, make([]byte, 64), cryptoSHA512); err == nil {
		t.Fatal("an unwrap-only key signed")
	}
	if err := mod.DestroyKey(ctx, u.ID()); err != nil {
		t.Fatal(err)
	}
	if _, err := mod.FindKey(ctx, u.ID()); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("after destroy: %v", err)
	}
	if err := mod.DestroyKey(ctx, u.ID()); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("destroying twice: %v", err)
	}
}

// TestReopenPINSources closes the shared module and reopens it with each PIN
// source, and with a wrong PIN, which must fail without the PIN in the error.
func TestReopenPINSources(t *testing.T) {
	k := sharedKey(t)
	id := k.ID()
	pin, err := os.ReadFile(tok.PINFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := mod.Close(); err != nil {
		t.Fatal(err)
	}
	reopen := func(src hsm.PINSource) (*hsm.Module, error) {
		cfg := tok.Config()
		cfg.PIN = src
		cfg.Sessions = 2
		cfg.RetryInterval = 200 * time.Millisecond
		return hsm.Open(cfg)
	}
	defer func() {
		// Leave a working module for the other tests.
		m, err := reopen(hsm.PINSource{File: tok.PINFile})
		if err != nil {
			t.Fatal(err)
		}
		mod = m
		keyOnce = sync.Once{}
		keyOnce.Do(func() { signKey, keyErr = mod.FindKey(context.Background(), id) })
	}()

	wrong := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrong, []byte("0000wrong-pin-0000\n"), 0o600)
	_, err = reopen(hsm.PINSource{File: wrong})
	if !errors.Is(err, hsm.ErrPINIncorrect) {
		t.Fatalf("wrong PIN: %v, want ErrPINIncorrect", err)
	}
	if strings.Contains(err.Error(), "wrong-pin") || strings.Contains(err.Error(), string(pin)) {
		t.Fatalf("error text carries a PIN: %v", err)
	}

	t.Setenv("KEYRACK_TEST_PIN", string(pin))
	credDir := t.TempDir()
	os.WriteFile(filepath.Join(credDir, "token-pin"), append(pin, '\n'), 0o600)
	t.Setenv("CREDENTIALS_DIRECTORY", credDir)
	for _, src := range []hsm.PINSource{{Env: "KEYRACK_TEST_PIN"}, {Credential: "token-pin"}, {File: tok.PINFile}} {
		m, err := reopen(src)
		if err != nil {
			t.Fatalf("PIN from %+v: %v", src, err)
		}
		// The key made before is still there after a reopen.
		k2, err := m.FindKey(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		signAndVerify(t, k2)
		if _, err := reopen(src); !errors.Is(err, hsm.ErrAlreadyOpen) {
			t.Fatalf("second Open of one library: %v, want ErrAlreadyOpen", err)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Selecting by serial works; a label with a wrong serial finds nothing.
	st := func() hsm.Status {
		m, _ := reopen(hsm.PINSource{File: tok.PINFile})
		defer m.Close()
		return m.Check(context.Background())
	}()
	cfg := tok.Config()
	cfg.TokenLabel, cfg.TokenSerial = "", st.Serial
	m, err := hsm.Open(cfg)
	if err != nil {
		t.Fatalf("open by serial %q: %v", st.Serial, err)
	}
	if got := m.Check(context.Background()); got.Label != tok.Label {
		t.Fatalf("open by serial found token %q", got.Label)
	}
	m.Close()
	cfg.TokenLabel, cfg.TokenSerial = tok.Label, "0000000000000000"
	if _, err := hsm.Open(cfg); !errors.Is(err, hsm.ErrTokenNotFound) {
		t.Fatalf("label with a wrong serial: %v, want ErrTokenNotFound", err)
	}

	for _, src := range []hsm.PINSource{{}, {Env: "A", File: "b"}, {Env: "KEYRACK_NO_SUCH_VAR"}, {Credential: "../x"}} {
		if _, err := reopen(src); err == nil {
			t.Fatalf("PIN source %+v accepted", src)
		}
	}
}

func TestSignatureCountParallel(t *testing.T) {
	k := sharedKey(t)
	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				signAndVerify(t, k)
			}
		}()
	}
	wg.Wait()
}
