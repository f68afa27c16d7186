package assertion

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/snapcore/snapd/asserts"
)

// ErrBadRequest marks device input that is malformed, too large, or not
// signed as it claims.
var ErrBadRequest = errors.New("bad device request")

// What a device may send: a serial-request, its model and, on a remodel,
// its current serial. Each is a few KiB; the bounds keep a hostile client
// from making the appliance parse or verify much more than that.
const (
	MaxStreamBytes      = 1 << 20
	MaxStreamAssertions = 4
)

// ParseSerialRequest decodes one serial-request and checks that the device
// key it carries signed it.
func ParseSerialRequest(data []byte) (*asserts.SerialRequest, error) {
	if len(data) > MaxStreamBytes {
		return nil, fmt.Errorf("%w: serial-request of %d bytes, over %d", ErrBadRequest, len(data), MaxStreamBytes)
	}
	a, err := asserts.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%w: not a valid assertion: %v", ErrBadRequest, err)
	}
	return checkSerialRequest(a)
}

func checkSerialRequest(a asserts.Assertion) (*asserts.SerialRequest, error) {
	req, ok := a.(*asserts.SerialRequest)
	if !ok {
		return nil, fmt.Errorf("%w: expected a serial-request, got a %s assertion", ErrBadRequest, a.Type().Name)
	}
	// The decoder already checked that the device key's id is
	// sign-key-sha3-384; this checks the key actually signed it.
	if err := checkDeviceSignature(req); err != nil {
		return nil, fmt.Errorf("%w: serial-request is not signed by its device key: %v", ErrBadRequest, err)
	}
	return req, nil
}

// RekeyProofPrefix starts the body of a re-key proof: a second
// serial-request in the stream, self-signed by the device key the serial
// is registered to, whose body is this prefix and the new device key's
// sha3-384 id. It is made with snapd's own asserts package by whoever
// holds the old key (asserts.SignWithoutAuthority), and the appliance
// checks it names the request's brand, model, serial and request-id.
const RekeyProofPrefix = "rekey-to: "

// DeviceStream is what a device sends to ask for a serial.
type DeviceStream struct {
	Request *asserts.SerialRequest // signature checked
	Model   *asserts.Model         // not checked: see CheckModel
	// OldSerial is the device's current serial on a remodel; its
	// signature is not checked here.
	OldSerial *asserts.Serial
	// RekeyProof is the old device key's consent to a re-key, if sent;
	// its self-signature is checked, what it names is not.
	RekeyProof *asserts.SerialRequest
}

func isRekeyProof(r *asserts.SerialRequest) bool {
	return bytes.HasPrefix(r.Body(), []byte(RekeyProofPrefix))
}

// ParseDeviceStream reads at most MaxStreamBytes from r: a serial-request,
// the device's model and, on a remodel, its current serial, in any order,
// each at most once. The serial-request's self-signature is checked.
func ParseDeviceStream(r io.Reader) (*DeviceStream, error) {
	if r == nil {
		return nil, fmt.Errorf("%w: no stream", ErrBadRequest)
	}
	data, err := io.ReadAll(io.LimitReader(r, MaxStreamBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading the stream: %v", ErrBadRequest, err)
	}
	if len(data) > MaxStreamBytes {
		return nil, fmt.Errorf("%w: stream larger than %d bytes", ErrBadRequest, MaxStreamBytes)
	}
	dec := asserts.NewDecoder(bytes.NewReader(data))
	ds := &DeviceStream{}
	for n := 0; ; n++ {
		a, err := dec.Decode()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: assertion %d of the stream: %v", ErrBadRequest, n+1, err)
		}
		if n == MaxStreamAssertions {
			return nil, fmt.Errorf("%w: more than %d assertions in the stream", ErrBadRequest, MaxStreamAssertions)
		}
		switch x := a.(type) {
		case *asserts.SerialRequest:
			slot, what := &ds.Request, "serial-requests"
			if isRekeyProof(x) {
				slot, what = &ds.RekeyProof, "re-key proofs"
			}
			if *slot != nil {
				return nil, fmt.Errorf("%w: two %s in the stream", ErrBadRequest, what)
			}
			if *slot, err = checkSerialRequest(x); err != nil {
				return nil, err
			}
		case *asserts.Model:
			if ds.Model != nil {
				return nil, fmt.Errorf("%w: two model assertions in the stream", ErrBadRequest)
			}
			ds.Model = x
		case *asserts.Serial:
			if ds.OldSerial != nil {
				return nil, fmt.Errorf("%w: two serial assertions in the stream", ErrBadRequest)
			}
			ds.OldSerial = x
		default:
			return nil, fmt.Errorf("%w: unexpected %s assertion in the stream", ErrBadRequest, a.Type().Name)
		}
	}
	if ds.Request == nil {
		return nil, fmt.Errorf("%w: the stream has no serial-request", ErrBadRequest)
	}
	if ds.Model == nil {
		return nil, fmt.Errorf("%w: the stream has no model assertion", ErrBadRequest)
	}
	return ds, nil
}

// CheckModel checks that a device's model assertion is for brand and
// model and, when brandKeys (the brand's account-key public keys) are
// given, that one of them signed it. Without keys only the names are
// checked: a model signed by a key the appliance does not know is not
// proof of anything, and the caller decides whether that is acceptable.
func CheckModel(m *asserts.Model, brand, model string, brandKeys ...asserts.PublicKey) error {
	if m == nil {
		return fmt.Errorf("%w: no model assertion", ErrBadRequest)
	}
	if m.BrandID() != brand || m.Model() != model {
		return fmt.Errorf("%w: model assertion is for %s/%s, the request for %s/%s", ErrBadRequest, m.BrandID(), m.Model(), brand, model)
	}
	if len(brandKeys) == 0 {
		return nil
	}
	for _, k := range brandKeys {
		if k == nil || k.ID() != m.SignKeyID() {
			continue
		}
		if err := asserts.SignatureCheck(m, k); err != nil {
			return fmt.Errorf("%w: model assertion signature: %v", ErrBadRequest, err)
		}
		return nil
	}
	return fmt.Errorf("%w: model assertion is signed by key %s, not by a key of brand %s given", ErrBadRequest, m.SignKeyID(), brand)
}
