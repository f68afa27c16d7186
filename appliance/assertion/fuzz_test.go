package assertion_test

import (
	"bytes"
	"testing"

	"github.com/keyrack/keyrack/appliance/assertion"
)

// FuzzParseDeviceStream feeds arbitrary bodies to the /v1/serial parser:
// it must never panic, and whatever it accepts must hold a serial-request
// self-signed by its device key, and a model.
func FuzzParseDeviceStream(f *testing.F) {
	f.Add([]byte("type: serial-request\n\nAcLB"))
	f.Add([]byte("garbage"))
	f.Add([]byte(""))
	f.Add([]byte("type: model\nauthority-id: x\n\n\n\n"))
	f.Add(bytes.Repeat([]byte("a: b\n"), 100))
	f.Fuzz(func(t *testing.T, data []byte) {
		ds, err := assertion.ParseDeviceStream(bytes.NewReader(data))
		if err != nil {
			return
		}
		if ds.Request == nil || ds.Model == nil {
			t.Fatal("accepted a stream without a serial-request and a model")
		}
	})
}
