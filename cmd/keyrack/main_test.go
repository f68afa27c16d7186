package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The CLI's own logic (parsing and exit codes) against canned appliance
// answers; the appliance's real health endpoint is tested in package
// appliance and through the daemon in cmd/keyrackd.
func TestStatus(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/health" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok","version":"v1","token":{"up":true,"label":"lab","serial":"s1","model":"SoftHSM v2","sessions":2}}`))
	}))
	defer up.Close()
	var out, errb bytes.Buffer
	if code := run([]string{"-url", up.URL, "status"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "token      up: lab (serial s1") {
		t.Fatalf("output: %s", out.String())
	}

	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(503)
		w.Write([]byte(`{"status":"unavailable","token":{"up":false,"error":"gone"}}`))
	}))
	defer down.Close()
	out.Reset()
	if code := run([]string{"-url", down.URL, "status"}, &out, &errb); code != 1 || !strings.Contains(out.String(), "DOWN: gone") {
		t.Fatalf("down: exit %d, %s", code, out.String())
	}
	if code := run([]string{"bogus"}, &out, &errb); code != 2 {
		t.Fatalf("unknown command: exit %d", code)
	}
	down.Close()
	if code := run([]string{"-url", down.URL, "status"}, &out, &errb); code != 1 {
		t.Fatalf("unreachable: exit %d", code)
	}
}
