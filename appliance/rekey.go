package appliance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
)

// A serial moves to a new device key only with the consent of the key it
// is registered to (a re-key proof in the device's stream, where the
// model allows re-keys) or with officers' approval of that one move: a
// serial.rekey ceremony grants it, once, to one named device key, for
// rekeyGrantTTL. The device-service API key is public, so it alone never
// moves a serial.

// KindSerialRekey lets one serial move to one new device key.
const KindSerialRekey = "serial.rekey"

// rekeyGrantTTL is how long an approved move waits for its device.
const rekeyGrantTTL = 7 * 24 * time.Hour

type rekeyPayload struct {
	Brand     string `json:"brand"`
	Model     string `json:"model"`
	Serial    string `json:"serial"`
	DeviceKey string `json:"device-key-sha3-384"`
}

// deviceKeyIDPattern is a device key's sha3-384: 48 bytes, base64url.
var deviceKeyIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{64}$`)

// ProposeRekey proposes that a serial may move to a new device key.
func (a *Appliance) ProposeRekey(ctx context.Context, officer string, req wire.RekeyRequest) (out Outcome, err error) {
	defer a.auditRefusal(ctx, officer, "proposal.create", KindSerialRekey, &err)
	p := rekeyPayload{Brand: req.Brand, Model: req.Model, Serial: req.Serial, DeviceKey: req.DeviceKey}
	return a.propose(ctx, officer, KindSerialRekey,
		fmt.Sprintf("let serial %s/%s/%s move to device key %s", p.Brand, p.Model, p.Serial, p.DeviceKey), p)
}

// checkRekey refuses a move of a serial that is not issued here, or to the
// key it already has.
func checkRekey(tx *store.Tx, raw []byte) (rekeyPayload, error) {
	var p rekeyPayload
	if err := json.Unmarshal(raw, &p); err != nil {
		return p, err
	}
	if !deviceKeyIDPattern.MatchString(p.DeviceKey) {
		return p, badInput("invalid-device-key", "device-key-sha3-384: the new device key's id, 64 characters of base64url (the serial-request's device-key-sha3-384)")
	}
	s, err := tx.GetSerial(p.Brand, p.Model, p.Serial)
	if errors.Is(err, store.ErrNotFound) {
		return p, &Error{Kind: NotFound, Code: "serial-unknown", Message: fmt.Sprintf("no serial %s of model %s/%s was issued here", p.Serial, p.Brand, p.Model)}
	}
	if err != nil {
		return p, err
	}
	if s.State != "issued" {
		return p, conflict("serial-in-progress", fmt.Sprintf("serial %s/%s/%s is being signed; propose again once it is issued", p.Brand, p.Model, p.Serial))
	}
	if s.DeviceKeyID == p.DeviceKey {
		return p, conflict("rekey-same-key", fmt.Sprintf("serial %s/%s/%s is already registered to device key %s", p.Brand, p.Model, p.Serial, p.DeviceKey))
	}
	mc, err := tx.GetModel(p.Brand, p.Model)
	if err != nil {
		return p, err
	}
	if mc.SerialSource == "assign" {
		// A device of an assign model sends no serial: a new key is a new
		// device and gets the next number. Moving a number would need the
		// device to ask for it, which the protocol does not let it do.
		return p, badInput("rekey-assigned", fmt.Sprintf("serials of model %s/%s are assigned: a device with a new key gets a new serial", p.Brand, p.Model))
	}
	return p, nil
}

// executeRekey records the grant; the device's next serial request with
// that key takes it.
func (a *Appliance) executeRekey(tx *store.Tx, prop store.Proposal) (string, map[string]any, error) {
	p, err := checkRekey(tx, []byte(prop.Payload))
	if err != nil {
		return "", nil, err
	}
	expires := time.Now().Add(rekeyGrantTTL)
	if err := tx.PutRekeyGrant(store.RekeyGrant{Brand: p.Brand, Model: p.Model, Serial: p.Serial, DeviceKeyID: p.DeviceKey,
		ProposalID: prop.ID, Expires: expires}); err != nil {
		return "", nil, err
	}
	return p.Brand + "/" + p.Model + "/" + p.Serial, map[string]any{"device_key_id": p.DeviceKey, "expires": expires.UTC().Format(time.RFC3339)}, nil
}
