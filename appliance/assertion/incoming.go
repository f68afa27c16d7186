package assertion

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/snapcore/snapd/asserts"
)

// ErrBadRequest marks a device request that is malformed or not signed as
// it claims.
var ErrBadRequest = errors.New("bad device request")

// Limits on what a device may send: a serial-request, a model and, for a
// remodel, the old serial; each well under 64 KiB in practice.
const (
	MaxStreamBytes      = 1 << 20
	MaxStreamAssertions = 4
)

// ParseSerialRequest decodes one serial-request and checks that it is
// signed by the device key it carries.
func ParseSerialRequest(data []byte) (*asserts.SerialRequest, error) {
	a, err := asserts.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	return checkSerialRequest(a)
}

func checkSerialRequest(a asserts.Assertion) (*asserts.SerialRequest, error) {
	req, ok := a.(*asserts.SerialRequest)
	if !ok {
		return nil, fmt.Errorf("%w: expected a serial-request, got %s", ErrBadRequest, a.Type().Name)
	}
	if err := asserts.SignatureCheck(req, req.DeviceKey()); err != nil {
		return nil, fmt.Errorf("%w: serial-request is not signed by its device key: %v", ErrBadRequest, err)
	}
	return req, nil
}

// DeviceStream is what a device sends to ask for a serial.
type DeviceStream struct {
	Request *asserts.SerialRequest
	Model   *asserts.Model
	// OldSerial is the device's current serial on a remodel.
	OldSerial *asserts.Serial
}

// ParseDeviceStream reads a serial-request, the device's model and, on a
// remodel, its current serial, in any order, each at most once.
func ParseDeviceStream(r io.Reader) (*DeviceStream, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxStreamBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading: %v", ErrBadRequest, err)
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
			return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
		}
		if n >= MaxStreamAssertions {
			return nil, fmt.Errorf("%w: more than %d assertions", ErrBadRequest, MaxStreamAssertions)
		}
		switch x := a.(type) {
		case *asserts.SerialRequest:
			if ds.Request != nil {
				return nil, fmt.Errorf("%w: two serial-requests", ErrBadRequest)
			}
			if ds.Request, err = checkSerialRequest(x); err != nil {
				return nil, err
			}
		case *asserts.Model:
			if ds.Model != nil {
				return nil, fmt.Errorf("%w: two models", ErrBadRequest)
			}
			ds.Model = x
		case *asserts.Serial:
			if ds.OldSerial != nil {
				return nil, fmt.Errorf("%w: two serials", ErrBadRequest)
			}
			ds.OldSerial = x
		default:
			return nil, fmt.Errorf("%w: unexpected %s assertion", ErrBadRequest, a.Type().Name)
		}
	}
	if ds.Request == nil {
		return nil, fmt.Errorf("%w: no serial-request", ErrBadRequest)
	}
	if ds.Model == nil {
		return nil, fmt.Errorf("%w: no model assertion", ErrBadRequest)
	}
	return ds, nil
}

// CheckModel checks that a device's model assertion is for brand and
// model and, when brandKeys are given, that it is signed by one of them.
func CheckModel(m *asserts.Model, brand, model string, brandKeys ...asserts.PublicKey) error {
	if m.BrandID() != brand || m.Model() != model {
		return fmt.Errorf("%w: model assertion is for %s/%s, the request for %s/%s", ErrBadRequest, m.BrandID(), m.Model(), brand, model)
	}
	if len(brandKeys) == 0 {
		return nil
	}
	for _, k := range brandKeys {
		if k.ID() == m.SignKeyID() {
			if err := asserts.SignatureCheck(m, k); err != nil {
				return fmt.Errorf("%w: model assertion signature: %v", ErrBadRequest, err)
			}
			return nil
		}
	}
	return fmt.Errorf("%w: model assertion is signed by key %s, not a key of brand %s known here", ErrBadRequest, m.SignKeyID(), brand)
}
