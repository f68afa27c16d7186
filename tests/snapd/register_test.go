// Package snapd registers devices against a dev keyrackd with snapd's own
// device manager: the code a Ubuntu Core device runs, at the snapd version
// the appliance is built against. It is its own module so the appliance
// does not depend on snapd's overlord.
package snapd

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/snapcore/snapd/asserts"
	"github.com/snapcore/snapd/asserts/sysdb"
	"github.com/snapcore/snapd/overlord/state"
)

const rootID = "keyrack-test-root"

// trust makes a root authority for the test (snapd's devices trust
// Canonical's root; this one plays it) and the brand's assertions under
// it: dev-brand's account and the account-key of the appliance's serial
// key, with the constraints keys export gives, as the Brand Store would
// issue them. snapd trusts the root through sysdb.InjectTrusted.
func trust(t *testing.T, serialKey exportedKey) (*asserts.Account, *asserts.AccountKey) {
	t.Helper()
	// 2048 bits: snapd checks signatures of any size Go accepts, and the
	// root only needs to sign three assertions.
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rootKey := asserts.RSAPrivateKey(rsaKey)
	signer, err := asserts.OpenDatabase(&asserts.DatabaseConfig{KeypairManager: asserts.NewMemoryKeypairManager()})
	if err != nil {
		t.Fatal(err)
	}
	if err := signer.ImportKey(rootKey); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Add(-time.Hour).Format(time.RFC3339)
	sign := func(typ *asserts.AssertionType, headers map[string]any, body []byte) asserts.Assertion {
		t.Helper()
		headers["authority-id"] = rootID
		a, err := signer.Sign(typ, headers, body, rootKey.PublicKey().ID())
		if err != nil {
			t.Fatalf("signing %s: %v", typ.Name, err)
		}
		return a
	}
	rootPub, err := asserts.EncodePublicKey(rootKey.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	rootAccount := sign(asserts.AccountType, map[string]any{"account-id": rootID, "display-name": "keyrack test root",
		"validation": "verified", "timestamp": now}, nil)
	rootAccountKey := sign(asserts.AccountKeyType, map[string]any{"account-id": rootID, "name": "root",
		"public-key-sha3-384": rootKey.PublicKey().ID(), "since": now}, rootPub)
	t.Cleanup(sysdb.InjectTrusted([]asserts.Assertion{rootAccount, rootAccountKey}))

	account := sign(asserts.AccountType, map[string]any{"account-id": brandID, "display-name": "dev brand",
		"validation": "verified", "timestamp": now}, nil).(*asserts.Account)
	h := map[string]any{"account-id": brandID, "name": "dev-serial",
		"public-key-sha3-384": serialKey.publicKey.ID(), "since": now}
	if len(serialKey.constraints) > 0 {
		h["format"] = "1"
		h["constraints"] = serialKey.constraints
	}
	brandKey := sign(asserts.AccountKeyType, h, serialKey.body).(*asserts.AccountKey)
	return account, brandKey
}

// TestSnapdRegistersWithKeyrack runs snapd's device registration (the
// become-operational change: prepare-device hook, device key, request-id,
// serial-request) against a dev keyrackd.
func TestSnapdRegistersWithKeyrack(t *testing.T) {
	app := startAppliance(t)
	key := app.exportKey(t, serialKey)
	account, brandKey := trust(t, key)

	// The officer gives the appliance the account-key "the store" issued,
	// so its serial answers carry it (serial-stream).
	akFile := filepath.Join(t.TempDir(), "account-key")
	if err := os.WriteFile(akFile, asserts.Encode(brandKey), 0o644); err != nil {
		t.Fatal(err)
	}
	app.keyrack(t, "keys", "account-key", serialKey, "-file", akFile)

	model := app.signModel(t, map[string]any{
		"type": "model", "authority-id": brandID, "brand-id": brandID, "series": "16",
		"model": modelID, "architecture": "amd64", "base": "core18",
		"gadget": gadgetName, "kernel": "dev-kernel",
		"timestamp": time.Now().UTC().Add(-time.Hour).Format(time.RFC3339),
	})
	if model.SignKeyID() != key.publicKey.ID() {
		t.Fatalf("model signed by %s, not the token's key %s", model.SignKeyID(), key.publicKey.ID())
	}
	seed := []asserts.Assertion{account, brandKey, model}

	rec, svcURL := newRecorder(t, app.url)
	hook := func(apiKey string, more ...[]string) prepareDevice {
		// As the gadget's hook does it:
		//   snapctl set device-service.url=... device-service.headers='{"api-key": "..."}'
		h := prepareDevice{{"set", "device-service.url=" + svcURL + "/v1/",
			fmt.Sprintf(`device-service.headers={"api-key": %q}`, apiKey)}}
		return append(h, more...)
	}
	assignedSerial := regexp.MustCompile(`^dev-[0-9]+$`)

	// checkRegistered checks what the device ends with after a successful
	// change: the serial the appliance answered, signed by the token's
	// key, for the device's key.
	checkRegistered := func(t *testing.T, d *device, chg *state.Change, answer exchange) identity {
		t.Helper()
		d.st.Lock()
		status, err, logs := chg.Status(), chg.Err(), taskLogs(chg)
		d.st.Unlock()
		if status != state.DoneStatus {
			t.Fatalf("registration %s: %v\n%s", status, err, logs)
		}
		d.st.Lock()
		var hookRan bool
		for _, tk := range chg.Tasks() {
			hookRan = hookRan || (tk.Kind() == "run-hook" && tk.Status() == state.DoneStatus)
		}
		d.st.Unlock()
		if !hookRan {
			t.Errorf("the change ran no prepare-device hook:\n%s", logs)
		}
		id := d.identity()
		if id.serial == nil {
			t.Fatal("change done but the device has no serial")
		}
		s := id.serial
		var answered *asserts.Serial
		var sawAccountKey bool
		for _, a := range answer.assertions(t) {
			switch a := a.(type) {
			case *asserts.Serial:
				answered = a
			case *asserts.AccountKey:
				sawAccountKey = a.PublicKeyID() == key.publicKey.ID()
			}
		}
		if answered == nil || answered.Serial() != s.Serial() || answered.Revision() != s.Revision() {
			t.Fatalf("device has serial %q; the appliance answered %v", s.Serial(), answered)
		}
		if !sawAccountKey {
			t.Errorf("the serial-stream answer did not carry the signing key's account-key")
		}
		if !assignedSerial.MatchString(s.Serial()) {
			t.Errorf("serial %q is not one the appliance assigns for %s", s.Serial(), modelID)
		}
		if s.BrandID() != brandID || s.Model() != modelID || s.AuthorityID() != brandID {
			t.Errorf("serial for %s/%s by %s", s.BrandID(), s.Model(), s.AuthorityID())
		}
		if s.SignKeyID() != key.publicKey.ID() {
			t.Errorf("serial signed by %s, not the token's key %s", s.SignKeyID(), key.publicKey.ID())
		}
		if s.DeviceKey().ID() != id.keyID {
			t.Errorf("serial for device key %s, the device's is %s", s.DeviceKey().ID(), id.keyID)
		}
		return id
	}

	// refused checks that a failed change shows the appliance's message as
	// snapd reports it, and returns the device key it made.
	refused := func(t *testing.T, d *device, chg *state.Change, answer exchange, snapdPrefix string) identity {
		t.Helper()
		if answer.status < 400 || answer.status > 500 || answer.contentType != "application/json" {
			t.Fatalf("appliance answered %s with %d %q; want a 4xx JSON refusal", answer.path, answer.status, answer.contentType)
		}
		msg := answer.message(t)
		d.st.Lock()
		status, err, logs := chg.Status(), chg.Err(), taskLogs(chg)
		d.st.Unlock()
		if status != state.ErrorStatus || err == nil {
			t.Fatalf("registration %s, want Error\n%s", status, logs)
		}
		want := snapdPrefix + ": " + msg
		if !strings.Contains(err.Error(), want) {
			t.Errorf("snapd's error does not carry the appliance's message\n got: %v\nwant: ...%s...", err, want)
		}
		if strings.Contains(err.Error(), "unexpected status") {
			t.Errorf("snapd fell back to the status code: %v", err)
		}
		t.Logf("snapd reports: %v", err)
		id := d.identity()
		if id.serial != nil {
			t.Fatalf("refused but the device has serial %q", id.serial.Serial())
		}
		if id.keyID == "" {
			t.Fatal("no device key after the refusal")
		}
		return id
	}

	t.Run("registers", func(t *testing.T) {
		from := rec.mark()
		d := newDevice(t, seed, hook(app.apiKey))
		chg := d.waitRegistration("", 3*time.Minute)
		serials := rec.exchanges(from, "/v1/serial")
		if len(serials) != 1 {
			t.Fatalf("%d serial requests, want 1:\n%s", len(serials), rec)
		}
		x := serials[0]
		if x.reqHeader.Get("api-key") != app.apiKey || !strings.Contains(x.reqHeader.Get("Snap-Device-Capabilities"), "serial-stream") {
			t.Errorf("snapd's serial request lacks the gadget's api-key header or serial-stream")
		}
		id := checkRegistered(t, d, chg, x)
		t.Logf("registered %s (device key %s)", id.serial.Serial(), id.keyID)
	})

	t.Run("refusals-show-the-message-and-the-retry-keeps-the-device-key", func(t *testing.T) {
		// 1. the hook sets an api-key the appliance does not know: the
		// request-id request is refused (401).
		from := rec.mark()
		d := newDevice(t, seed, hook("krk_c_not-a-key"))
		chg := d.waitRegistration("", 3*time.Minute)
		reqIDs := rec.exchanges(from, "/v1/request-id")
		if len(reqIDs) != 1 {
			t.Fatalf("%d request-id requests, want 1:\n%s", len(reqIDs), rec)
		}
		first := refused(t, d, chg, reqIDs[0], "cannot retrieve request-id for making a request for a serial")

		// 2. a refreshed gadget proposes a serial, which a model whose
		// serials the appliance assigns refuses (400) at /v1/serial.
		from = rec.mark()
		d.restart(hook(app.apiKey, []string{"set", "registration.proposed-serial=my-own-serial"}))
		chg = d.waitRegistration(chg.ID(), 3*time.Minute)
		serials := rec.exchanges(from, "/v1/serial")
		if len(serials) != 1 {
			t.Fatalf("%d serial requests, want 1:\n%s", len(serials), rec)
		}
		if got := serials[0].serialRequest(t).Serial(); got != "my-own-serial" {
			t.Fatalf("snapd proposed serial %q, want the hook's my-own-serial", got)
		}
		second := refused(t, d, chg, serials[0], "cannot deliver device serial request")
		if second.keyID != first.keyID {
			t.Errorf("device key changed after a refusal: %s, then %s", first.keyID, second.keyID)
		}

		// 3. fixed: the same device key registers. The gadget's config
		// outlives the hook run that set it, so the fixed hook unsets the
		// proposed serial rather than just not setting it.
		from = rec.mark()
		d.restart(hook(app.apiKey, []string{"unset", "registration.proposed-serial"}))
		chg = d.waitRegistration(chg.ID(), 3*time.Minute)
		serials = rec.exchanges(from, "/v1/serial")
		if len(serials) != 1 {
			t.Fatalf("%d serial requests, want 1:\n%s", len(serials), rec)
		}
		id := checkRegistered(t, d, chg, serials[0])
		if id.keyID != first.keyID {
			t.Errorf("registered with device key %s, the refused requests had %s", id.keyID, first.keyID)
		}
		t.Logf("registered %s with the device key of the refused requests", id.serial.Serial())
	})

	t.Run("lost-answer-retry-keeps-the-device-key", func(t *testing.T) {
		// The appliance signs a serial but snapd never gets the answer:
		// snapd retries the task after 60 s (its retryInterval) with a new
		// request-id and the same device key.
		from := rec.mark()
		rec.mu.Lock()
		rec.dropNextSerial = true
		rec.mu.Unlock()
		d := newDevice(t, seed, hook(app.apiKey))
		chg := d.waitRegistration("", 4*time.Minute)
		serials := rec.exchanges(from, "/v1/serial")
		if len(serials) != 2 || !serials[0].dropped {
			t.Fatalf("want a lost serial answer and one retry:\n%s", rec)
		}
		d.st.Lock()
		logs := taskLogs(chg)
		d.st.Unlock()
		if !strings.Contains(logs, "cannot deliver device serial request") {
			t.Errorf("the lost answer is not in the task log:\n%s", logs)
		}
		var lost *asserts.Serial
		for _, a := range serials[0].assertions(t) {
			if s, ok := a.(*asserts.Serial); ok {
				lost = s
			}
		}
		if lost == nil {
			t.Fatalf("the lost answer (%d) held no serial: %s", serials[0].status, serials[0].body)
		}
		r1, r2 := serials[0].serialRequest(t), serials[1].serialRequest(t)
		if r1.RequestID() == r2.RequestID() {
			t.Errorf("the retry reused request-id %s", r1.RequestID())
		}
		if r1.DeviceKey().ID() != r2.DeviceKey().ID() {
			t.Errorf("the retry came with another device key: %s, then %s", r1.DeviceKey().ID(), r2.DeviceKey().ID())
		}
		id := checkRegistered(t, d, chg, serials[1])
		if lost.DeviceKey().ID() != id.keyID {
			t.Fatalf("lost serial for key %s, device key %s", lost.DeviceKey().ID(), id.keyID)
		}
		if id.serial.Serial() != lost.Serial() {
			t.Fatalf("one device key, one serial: the lost answer had %s, snapd's retry with the same device key got %s",
				lost.Serial(), id.serial.Serial())
		}
		if !bytes.Equal(asserts.Encode(id.serial), asserts.Encode(lost)) {
			t.Fatalf("the retry got serial %s again, but not the assertion the lost answer held", lost.Serial())
		}
		t.Logf("the retry got the lost serial %s back", id.serial.Serial())
	})
}
