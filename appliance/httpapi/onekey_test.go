package httpapi

import (
	"bytes"
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance/assertion"
	"github.com/keyrack/keyrack/appliance/store"
)

func (d *device) keyID() string { return asserts.RSAPrivateKey(d.priv).PublicKey().ID() }

// rekeyProof is the old device key's consent to moving its serial to the
// new device key: a serial-request it signs, naming the new key.
func (d *device) rekeyProof(t *testing.T, requestID, model, serial, newKeyID string) []byte {
	t.Helper()
	enc, _ := asserts.EncodePublicKey(asserts.RSAPrivateKey(d.priv).PublicKey())
	a, err := asserts.SignWithoutAuthority(asserts.SerialRequestType, map[string]any{"brand-id": "brand-x", "model": model,
		"request-id": requestID, "device-key": string(enc), "serial": serial}, []byte(assertion.RekeyProofPrefix+newKeyID), asserts.RSAPrivateKey(d.priv))
	if err != nil {
		t.Fatal(err)
	}
	return asserts.Encode(a)
}

func (e *deviceEnv) serialsOfKey(keyID string) []store.LogEntry {
	e.t.Helper()
	var out []store.LogEntry
	err := e.db.View(context.Background(), func(tx *store.Tx) error {
		log, err := tx.SigningLog(store.LogFilter{Type: "serial"})
		for _, r := range log {
			if r.DeviceKeyID == keyID {
				out = append(out, r)
			}
		}
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// TestOneDeviceKeyOneSerial: where the appliance assigns serials, snapd's
// retry (same device key, new request-id, after a refusal or a lost
// answer) gets the serial on record, byte for byte, and burns no number.
// Before, every retry was signed a new number.
func TestOneDeviceKeyOneSerial(t *testing.T) {
	e := newDeviceEnv(t, false)
	m9 := e.modelAssertion("line-9")
	dev := newDevice(t)
	register := func(d *device) (int, []byte) {
		code, _, raw := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(d.serialRequest(t, e.requestID("line-a"), "line-9", "", nil), m9), nil)
		return code, raw
	}
	code, first := register(dev)
	if code != 200 {
		t.Fatalf("first registration: %d %s", code, first)
	}
	for i := 0; i < 3; i++ {
		code, again := register(dev)
		if code != 200 || !bytes.Equal(asserts.Encode(decodeStream(t, again)[0]), asserts.Encode(decodeStream(t, first)[0])) {
			t.Fatalf("retry %d with the same device key: %d, a different answer:\n%s\nthen\n%s", i, code, first, again)
		}
	}
	if s := decodeStream(t, first)[0].(*asserts.Serial); s.Serial() != "L9-1" || s.Revision() != 0 {
		t.Fatalf("first serial %s revision %d", s.Serial(), s.Revision())
	}
	// The next device takes the next number: the retries used none.
	if code, raw := register(newDevice(t)); code != 200 || decodeStream(t, raw)[0].(*asserts.Serial).Serial() != "L9-2" {
		t.Fatalf("the next device: %d %s", code, raw)
	}
	if n := len(e.serialsOfKey(dev.keyID())); n != 1 {
		t.Fatalf("the device key was signed %d serials", n)
	}
	_, _, m := e.call("", "GET", "/metrics", "", nil, nil)
	if v := metricValue(t, m, "keyrack_serials_returned_total"); v != 3 {
		t.Fatalf("keyrack_serials_returned_total %v, want 3", v)
	}
}

// TestConcurrentFirstRegistrationsOfOneKey: twenty requests of one device
// key at once, each with its own request-id, give one serial: every
// answer is that serial or a 503 to retry, and one signature is made.
func TestConcurrentFirstRegistrationsOfOneKey(t *testing.T) {
	e := newDeviceEnv(t, false)
	m9 := e.modelAssertion("line-9")
	dev := newDevice(t)
	const n = 20
	got := make([]string, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for attempt := 0; attempt < 500; attempt++ {
				code, _, raw := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(dev.serialRequest(t, e.requestID("line-a"), "line-9", "", nil), m9), nil)
				if code == http.StatusServiceUnavailable {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				if code != 200 {
					got[i] = string(raw)
					return
				}
				got[i] = decodeStream(t, raw)[0].(*asserts.Serial).Serial()
				return
			}
		}(i)
	}
	wg.Wait()
	for _, g := range got {
		if g != "L9-1" {
			t.Fatalf("%d concurrent first registrations of one key got %q", n, got)
		}
	}
	if rows := e.serialsOfKey(dev.keyID()); len(rows) != 1 {
		t.Fatalf("%d signatures for one device key", len(rows))
	}
}

// TestRekeyNeedsProof plays the outsider who holds the public
// device-service key and a device key of their own, asking for a serial
// another device holds: with allow-rekey the serial moved to them (revision
// + 1). Now it moves only with the old device key's proof or officers'
// grant for exactly that key, once.
func TestRekeyNeedsProof(t *testing.T) {
	e := newDeviceEnv(t, true)
	db := trustingDB(t, e.brand)
	m1 := e.modelAssertion("line-1")
	owner, attacker, replacement := newDevice(t), newDevice(t), newDevice(t)
	post := func(parts ...[]byte) (int, []byte) {
		code, _, raw := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(parts...), nil)
		return code, raw
	}
	if code, raw := post(owner.serialRequest(t, e.requestID("line-a"), "line-1", "RK-1", nil), m1); code != 200 {
		t.Fatalf("owner: %d %s", code, raw)
	}
	// The outsider, with no proof.
	if code, raw := post(attacker.serialRequest(t, e.requestID("line-a"), "line-1", "RK-1", nil), m1); code != http.StatusForbidden || errCodeOf(raw) != "rekey-unproven" {
		t.Fatalf("re-key without proof: %d %s", code, raw)
	}
	// ... with a "proof" signed by their own second key.
	rid := e.requestID("line-a")
	if code, raw := post(attacker.serialRequest(t, rid, "line-1", "RK-1", nil), replacement.rekeyProof(t, rid, "line-1", "RK-1", attacker.keyID()), m1); code != http.StatusForbidden || errCodeOf(raw) != "rekey-unproven" {
		t.Fatalf("re-key with a proof by another key: %d %s", code, raw)
	}
	// ... replaying the owner's proof made for another request-id, or
	// for another new key.
	rid = e.requestID("line-a")
	if code, raw := post(attacker.serialRequest(t, rid, "line-1", "RK-1", nil), owner.rekeyProof(t, e.requestID("line-a"), "line-1", "RK-1", attacker.keyID()), m1); code != 400 || errCodeOf(raw) != "invalid-rekey-proof" {
		t.Fatalf("re-key with a proof for another request-id: %d %s", code, raw)
	}
	rid = e.requestID("line-a")
	if code, raw := post(attacker.serialRequest(t, rid, "line-1", "RK-1", nil), owner.rekeyProof(t, rid, "line-1", "RK-1", replacement.keyID()), m1); code != 400 || errCodeOf(raw) != "invalid-rekey-proof" {
		t.Fatalf("re-key with a proof naming another key: %d %s", code, raw)
	}
	if rows := e.serialsOfKey(attacker.keyID()); len(rows) != 0 {
		t.Fatalf("the outsider got %d serials", len(rows))
	}
	// The owner consents: the serial moves, revision 1.
	rid = e.requestID("line-a")
	code, raw := post(replacement.serialRequest(t, rid, "line-1", "RK-1", nil), owner.rekeyProof(t, rid, "line-1", "RK-1", replacement.keyID()), m1)
	if code != 200 {
		t.Fatalf("re-key with the owner's proof: %d %s", code, raw)
	}
	s := decodeStream(t, raw)[0].(*asserts.Serial)
	if s.Revision() != 1 || s.DeviceKey().ID() != replacement.keyID() {
		t.Fatalf("re-keyed serial: revision %d key %s", s.Revision(), s.DeviceKey().ID())
	}
	if err := db.Check(s); err != nil {
		t.Fatal(err)
	}

	// A device that lost its key: officers grant the move to one key.
	lost, fresh := newDevice(t), newDevice(t)
	if code, raw := post(lost.serialRequest(t, e.requestID("line-a"), "line-1", "RK-2", nil), m1); code != 200 {
		t.Fatalf("second owner: %d %s", code, raw)
	}
	if a := e.propose("alice", "POST", "/v1/serials/rekey", map[string]any{"brand": "brand-x", "model": "line-1", "serial": "RK-2", "device-key-sha3-384": "short"}); a.Status != 400 || a.errCode() != "invalid-device-key" {
		t.Fatalf("grant with a malformed key id: %d %s", a.Status, a.Raw)
	}
	if a := e.propose("alice", "POST", "/v1/serials/rekey", map[string]any{"brand": "brand-x", "model": "line-1", "serial": "RK-404", "device-key-sha3-384": fresh.keyID()}); a.Status != 404 {
		t.Fatalf("grant for an unknown serial: %d %s", a.Status, a.Raw)
	}
	// One officer's proposal alone (quorum 2) grants nothing.
	a := e.propose("alice", "POST", "/v1/serials/rekey", map[string]any{"brand": "brand-x", "model": "line-1", "serial": "RK-2", "device-key-sha3-384": fresh.keyID()})
	if a.Status != http.StatusAccepted {
		t.Fatalf("grant proposal: %d %s", a.Status, a.Raw)
	}
	if code, raw := post(fresh.serialRequest(t, e.requestID("line-a"), "line-1", "RK-2", nil), m1); code != http.StatusForbidden {
		t.Fatalf("re-key before the quorum approved: %d %s", code, raw)
	}
	if b := e.approve("bob", a.proposalID()); b.Status != 200 {
		t.Fatalf("approving the grant: %d %s", b.Status, b.Raw)
	}
	// The grant is for fresh's key only.
	if code, raw := post(attacker.serialRequest(t, e.requestID("line-a"), "line-1", "RK-2", nil), m1); code != http.StatusForbidden {
		t.Fatalf("another key under the grant: %d %s", code, raw)
	}
	code, raw = post(fresh.serialRequest(t, e.requestID("line-a"), "line-1", "RK-2", nil), m1)
	if code != 200 || decodeStream(t, raw)[0].(*asserts.Serial).Revision() != 1 {
		t.Fatalf("re-key under the grant: %d %s", code, raw)
	}
	// Used up: the lost key back again cannot take it back.
	if code, raw := post(lost.serialRequest(t, e.requestID("line-a"), "line-1", "RK-2", nil), m1); code != http.StatusForbidden {
		t.Fatalf("the grant used twice: %d %s", code, raw)
	}
	_, _, m := e.call("", "GET", "/metrics", "", nil, nil)
	if metricValue(t, m, `keyrack_serial_rekeys_total{by="old-device-key"}`) != 1 || metricValue(t, m, `keyrack_serial_rekeys_total{by="officers"}`) != 1 {
		t.Fatal("re-keys not counted by what allowed them")
	}
}

// TestRekeyRefusedWithoutAllowRekey: on a model without allow-rekey, even
// the owner's proof does not move a serial; officers still can.
func TestRekeyRefusedWithoutAllowRekey(t *testing.T) {
	e := newDeviceEnv(t, false)
	m1 := e.modelAssertion("line-1")
	owner, next := newDevice(t), newDevice(t)
	if code, _, raw := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(owner.serialRequest(t, e.requestID("line-a"), "line-1", "NR-1", nil), m1), nil); code != 200 {
		t.Fatalf("owner: %d %s", code, raw)
	}
	rid := e.requestID("line-a")
	code, _, raw := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(next.serialRequest(t, rid, "line-1", "NR-1", nil), owner.rekeyProof(t, rid, "line-1", "NR-1", next.keyID()), m1), nil)
	if code != http.StatusConflict || errCodeOf(raw) != "serial-taken" {
		t.Fatalf("proof on a model without allow-rekey: %d %s", code, raw)
	}
	e.quorum("alice", "POST", "/v1/serials/rekey", map[string]any{"brand": "brand-x", "model": "line-1", "serial": "NR-1", "device-key-sha3-384": next.keyID()})
	if code, _, raw := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(next.serialRequest(t, e.requestID("line-a"), "line-1", "NR-1", nil), m1), nil); code != 200 {
		t.Fatalf("re-key under officers' grant: %d %s", code, raw)
	}
}
