package httpapi

import (
	"net/http"
	"strings"
	"testing"

	"github.com/snapcore/snapd/asserts"
)

// TestSerialsCannotBeFormulas plays a device choosing a serial that a
// spreadsheet would run (keyrack log -csv opens in one): refused before
// anything is signed; an officer's serial prefix likewise. A cell of the
// CSV export that starts like a formula is escaped anyway.
func TestSerialsCannotBeFormulas(t *testing.T) {
	e := newDeviceEnv(t, false)
	model := e.modelAssertion("line-1")
	for _, sn := range []string{`=HYPERLINK("http://evil.example/","x")`, "+1+1", "-2+3", "@SUM(A1)", "=1", "SN 1", "SN/1", "ü-1"} {
		code, _, raw := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(newDevice(t).serialRequest(t, e.requestID("line-a"), "line-1", sn, nil), model), nil)
		if code != http.StatusBadRequest || errCodeOf(raw) != "invalid-serial" {
			t.Errorf("serial %q: %d %s", sn, code, raw)
		}
	}
	if code, _, raw := e.call("line-a", "POST", "/v1/serial", asserts.MediaType, stream(newDevice(t).serialRequest(t, e.requestID("line-a"), "line-1", "SN-1.2:3_4", nil), model), nil); code != http.StatusOK {
		t.Fatalf("a serial of the safe alphabet: %d %s", code, raw)
	}
	key := mustModelKey(t, e, "line-1")
	all := map[string]string{"serial": key}
	if a := e.do("alice", "POST", "/v1/models", map[string]any{"brand": "brand-x", "model": "line-7", "keys": all, "serial-source": "assign", "serial-prefix": "=cmd|"}); a.Status != http.StatusBadRequest {
		t.Fatalf("a formula serial prefix: %d %s", a.Status, a.Raw)
	}
	_, _, csv := e.call("", "GET", "/v1/signing-log?format=csv", "", nil, map[string]string{"Authorization": "Bearer " + e.creds["alice"]})
	if !strings.Contains(string(csv), ",SN-1.2:3_4,") {
		t.Fatalf("the CSV log:\n%s", csv)
	}
}

func TestCSVRowEscapesFormulas(t *testing.T) {
	got := csvRow("=1+1", "+x", "-abc", "@x", "\t=x", "\r=x", "plain", "", "a=b")
	want := []string{"'=1+1", "'+x", "'-abc", "'@x", "'\t=x", "'\r=x", "plain", "", "a=b"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("cell %d: %q, want %q", i, got[i], want[i])
		}
	}
}
