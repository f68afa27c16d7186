package appliance

import (
	"encoding/json"
	"testing"
)

// FuzzParseRoles feeds arbitrary JSON to the roles an officer submits: it
// must never panic, and accepted roles must survive their canonical form.
func FuzzParseRoles(f *testing.F) {
	f.Add([]byte(`[{"type": "serial", "models": ["foo-.*"]}]`))
	f.Add([]byte(`[{"type": "serial", "models": ["("]}]`))
	f.Add([]byte(`[{"type": "model"}, {"type": "system-user", "models": ["a|b"]}]`))
	f.Add([]byte(`{"type": "serial"}`))
	f.Add([]byte("\xff\xfe"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := parseRoles(json.RawMessage(data))
		if err != nil {
			return
		}
		again, err := parseRoles(json.RawMessage(r.canonical))
		if err != nil || again.canonical != r.canonical {
			t.Fatalf("canonical roles %s do not parse back: %v", r.canonical, err)
		}
	})
}
