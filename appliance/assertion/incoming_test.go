package assertion_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance/assertion"
)

// serialRequest is what snapd on a device sends, signed by snapd's code.
func serialRequest(t *testing.T, headers map[string]any, body string) []byte {
	t.Helper()
	devKey, err := asserts.EncodePublicKey(devicePub())
	if err != nil {
		t.Fatal(err)
	}
	h := map[string]any{"brand-id": brandID, "model": "foo-1", "request-id": "REQ1", "device-key": string(devKey)}
	for k, v := range headers {
		h[k] = v
	}
	a, err := asserts.SignWithoutAuthority(asserts.SerialRequestType, h, []byte(body), asserts.RSAPrivateKey(devicePriv))
	if err != nil {
		t.Fatal(err)
	}
	return asserts.Encode(a)
}

// stream joins encoded assertions the way snapd sends them (a blank line
// between them), through snapd's own encoder.
func stream(t *testing.T, parts ...[]byte) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := asserts.NewEncoder(&b)
	for _, p := range parts {
		if err := enc.WriteEncoded(p); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func mustBeBad(t *testing.T, err error, want string) {
	t.Helper()
	if !errors.Is(err, assertion.ErrBadRequest) || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want ErrBadRequest mentioning %q", err, want)
	}
}

func TestParseSerialRequest(t *testing.T) {
	good := serialRequest(t, nil, "HW: details")
	req, err := assertion.ParseSerialRequest(good)
	if err != nil {
		t.Fatal(err)
	}
	if req.RequestID() != "REQ1" || req.DeviceKey().ID() != devicePub().ID() || string(req.Body()) != "HW: details" {
		t.Fatalf("%v", req.Headers())
	}

	// One made by our signer with the device key (as a device would,
	// through a TPM-held key) parses too.
	ds, err := assertion.NewSigner(&tokenKey{priv: devicePriv}, assertion.WithMinKeyBits(2048))
	if err != nil {
		t.Fatal(err)
	}
	devKey, _ := asserts.EncodePublicKey(devicePub())
	ours, err := ds.Sign(asserts.SerialRequestType, map[string]any{"brand-id": brandID, "model": "foo-1", "request-id": "R2",
		"device-key": string(devKey), "serial": "SN-7"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if req, err := assertion.ParseSerialRequest(ours.Bytes); err != nil || req.Serial() != "SN-7" {
		t.Fatalf("our serial-request: %v", err)
	}

	// Same length, so only the signature can tell.
	_, err = assertion.ParseSerialRequest(bytes.Replace(good, []byte("HW: details"), []byte("HW: detailz"), 1))
	mustBeBad(t, err, "not signed by its device key")
	_, err = assertion.ParseSerialRequest(bytes.Replace(good, []byte("request-id: REQ1"), []byte("request-id: REQ2"), 1))
	mustBeBad(t, err, "not signed by its device key")

	// Signed by another key while carrying the device key: snapd's
	// decoder refuses the key id mismatch, so our signer will not make
	// it, and a hand-made one is refused when parsed.
	brandMade, err := assertion.NewSigner(brandToken())
	if err != nil {
		t.Fatal(err)
	}
	_, err = brandMade.Sign(asserts.SerialRequestType, map[string]any{"brand-id": brandID, "model": "foo-1",
		"request-id": "R3", "device-key": string(devKey)}, nil)
	mustBeInvalid(t, err, "device key does not match")
	swapped := bytes.Replace(good, []byte("sign-key-sha3-384: "+devicePub().ID()), []byte("sign-key-sha3-384: "+brandPub().ID()), 1)
	_, err = assertion.ParseSerialRequest(swapped)
	mustBeBad(t, err, "device key does not match")

	_, err = assertion.ParseSerialRequest([]byte("garbage"))
	mustBeBad(t, err, "not a valid assertion")
	_, err = assertion.ParseSerialRequest(nil)
	mustBeBad(t, err, "not a valid assertion")
	_, err = assertion.ParseSerialRequest(good[:len(good)/2])
	mustBeBad(t, err, "not a valid assertion")
	_, err = assertion.ParseSerialRequest(bytes.Repeat([]byte("a"), assertion.MaxStreamBytes+1))
	mustBeBad(t, err, "over")

	serial := examples(t, brandSigner(t))["serial"].signed.Bytes
	_, err = assertion.ParseSerialRequest(serial)
	mustBeBad(t, err, "expected a serial-request, got a serial")
}

func TestParseDeviceStream(t *testing.T) {
	good := serialRequest(t, nil, "HW: details")
	ex := examples(t, brandSigner(t))
	model := ex["model core18"].signed.Bytes
	oldSerial := ex["serial"].signed.Bytes

	ds, err := assertion.ParseDeviceStream(bytes.NewReader(stream(t, good, model)))
	if err != nil {
		t.Fatal(err)
	}
	if ds.Request.RequestID() != "REQ1" || ds.Model.Model() != "foo-18" || ds.OldSerial != nil {
		t.Fatalf("%+v", ds)
	}
	// Remodel: the current serial too, in any order.
	remodel := serialRequest(t, map[string]any{"original-brand-id": brandID, "original-model": "foo-1", "original-serial": "SN-001"}, "")
	ds, err = assertion.ParseDeviceStream(bytes.NewReader(stream(t, model, oldSerial, remodel)))
	if err != nil {
		t.Fatal(err)
	}
	if ds.OldSerial == nil || ds.OldSerial.Serial() != "SN-001" || ds.Request.HeaderString("original-serial") != "SN-001" {
		t.Fatalf("%+v", ds)
	}

	tampered := bytes.Replace(good, []byte("HW: details"), []byte("HW: detailz"), 1)
	acct := asserts.Encode(account(t, brandID))
	for _, c := range []struct {
		name, want string
		in         []byte
	}{
		{"no model", "no model", good},
		{"no serial-request", "no serial-request", model},
		{"empty", "no serial-request", nil},
		{"two requests", "two serial-requests", stream(t, good, model, good)},
		{"two models", "two model", stream(t, good, model, model)},
		{"two serials", "two serial assertions", stream(t, good, model, oldSerial, oldSerial)},
		{"unexpected type", "unexpected account", stream(t, good, acct, model)},
		{"tampered request", "not signed by its device key", stream(t, tampered, model)},
		{"garbage", "assertion 1", []byte("garbage\n\nmore garbage")},
		{"truncated in the headers", "assertion 2", stream(t, good, model[:100])},
		{"oversize", "larger than", append(stream(t, good, model), bytes.Repeat([]byte("\n"), assertion.MaxStreamBytes)...)},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := assertion.ParseDeviceStream(bytes.NewReader(c.in))
			mustBeBad(t, err, c.want)
		})
	}
	if _, err := assertion.ParseDeviceStream(nil); !errors.Is(err, assertion.ErrBadRequest) {
		t.Errorf("nil reader: %v", err)
	}
}

func TestCheckModel(t *testing.T) {
	ex := examples(t, brandSigner(t))
	m := ex["model core18"].signed.Assertion.(*asserts.Model)
	if err := assertion.CheckModel(m, brandID, "foo-18", devicePub(), brandPub()); err != nil {
		t.Fatalf("brand-signed model refused: %v", err)
	}
	if err := assertion.CheckModel(m, brandID, "foo-18"); err != nil {
		t.Fatalf("name-only check: %v", err)
	}
	mustBeBad(t, assertion.CheckModel(m, brandID, "foo-19", brandPub()), "model assertion is for")
	mustBeBad(t, assertion.CheckModel(m, "other-brand", "foo-18", brandPub()), "model assertion is for")
	mustBeBad(t, assertion.CheckModel(m, brandID, "foo-18", devicePub()), "not by a key of brand")
	mustBeBad(t, assertion.CheckModel(nil, brandID, "foo-18"), "no model")

	// A model whose content was changed still decodes and names the
	// brand key; the signature check catches it.
	bad := bytes.Replace(ex["model core18"].signed.Bytes, []byte("display-name: Foo 18"), []byte("display-name: Foo 19"), 1)
	a, err := asserts.Decode(bad)
	if err != nil {
		t.Fatal(err)
	}
	mustBeBad(t, assertion.CheckModel(a.(*asserts.Model), brandID, "foo-18", brandPub()), "signature")

	// A model with its signature cut short still decodes (the decoder
	// does not look at the signature); the check refuses it.
	cut := ex["model core18"].signed.Bytes
	a, err = asserts.Decode(cut[:len(cut)-len(cut)/10])
	if err != nil {
		t.Fatal(err)
	}
	mustBeBad(t, assertion.CheckModel(a.(*asserts.Model), brandID, "foo-18", brandPub()), "signature")

	// The same model signed by a stranger's key claiming the brand.
	stranger, err := assertion.NewSigner(&tokenKey{priv: rootPriv})
	if err != nil {
		t.Fatal(err)
	}
	forged, err := stranger.SignModel(assertion.Model{BrandID: brandID, Model: "foo-18", Architecture: "amd64",
		Gadget: "pc", Kernel: "pc-kernel", Timestamp: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	mustBeBad(t, assertion.CheckModel(forged.Assertion.(*asserts.Model), brandID, "foo-18", brandPub()), "not by a key of brand")
}
