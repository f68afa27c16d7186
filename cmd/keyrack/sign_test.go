package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance/wire"
)

// line7Statement is brand-x/line-7's model, as snap sign takes it.
const line7Statement = `{
  "type": "model",
  "authority-id": "brand-x",
  "brand-id": "brand-x",
  "series": "16",
  "model": "line-7",
  "architecture": "amd64",
  "base": "core18",
  "gadget": "pc",
  "kernel": "pc-kernel",
  "timestamp": "2026-01-01T00:00:00Z"
}
`

// statementFile writes a statement into the test's directory.
func (e *env) statementFile(name, statement string) string {
	e.t.Helper()
	f := filepath.Join(e.dir, name)
	if err := os.WriteFile(f, []byte(statement), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return f
}

// TestSignCommand: keyrack sign -k KEY FILE is snap sign with a quorum.
// Alice's sign waits for bob's approval and writes the assertion, and
// nothing else, to stdout; with -no-wait, sign -fetch writes it later; a
// statement outside the key's roles is refused when proposed, naming the
// rule.
func TestSignCommand(t *testing.T) {
	e := newEnv(t)
	e.lineSetup()
	stmt := strings.Replace(line7Statement, `"line-7"`, `"line-70"`, 1)
	file := e.statementFile("line-70.json", stmt)

	type result struct {
		code      int
		out, errs string
	}
	done := make(chan result, 1)
	go func() {
		code, out, errs := e.keyrack("alice", "sign", "-k", "line-key", file)
		done <- result{code, out, errs}
	}()
	// Bob finds the pending proposal and approves it.
	var id string
	for deadline := time.Now().Add(30 * time.Second); id == ""; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no sign proposal appeared")
		}
		_, out, _ := e.keyrack("bob", "proposals", "-state", "pending", "-json")
		var l wire.ProposalList
		json.Unmarshal([]byte(out), &l)
		for _, p := range l.Proposals {
			if p.Kind == "assertion.sign" && len(p.Approvals) == 1 {
				id = p.ID
			}
		}
	}
	if code, out, errs := e.keyrack("bob", "approve", id); code != 0 {
		t.Fatalf("approve: %d %s %s", code, out, errs)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("keyrack sign did not finish")
	}
	if r.code != 0 {
		t.Fatalf("sign: %d\n%s\n%s", r.code, r.out, r.errs)
	}
	a, err := asserts.Decode([]byte(r.out))
	if err != nil {
		t.Fatalf("stdout is not the assertion alone: %v\n%s", err, r.out)
	}
	if m, ok := a.(*asserts.Model); !ok || m.Model() != "line-70" || m.BrandID() != "brand-x" {
		t.Fatalf("signed: %v", a.Headers())
	}

	// -no-wait, then -fetch.
	code, out, errs := e.keyrack("alice", "sign", "-k", "line-key", "-no-wait", file)
	if code != 0 || out != "" || !strings.Contains(errs, "keyrack sign -fetch") {
		t.Fatalf("sign -no-wait: %d %q %s", code, out, errs)
	}
	id2 := regexp.MustCompile(`sign -fetch ([0-9a-f]+)`).FindStringSubmatch(errs)[1]
	if code, _, errs := e.keyrack("alice", "sign", "-fetch", id2); code != 1 || !strings.Contains(errs, "nothing is signed yet") {
		t.Fatalf("fetch before the quorum: %d %s", code, errs)
	}
	if code, out, errs := e.keyrack("bob", "approve", id2); code != 0 {
		t.Fatalf("approve: %d %s %s", code, out, errs)
	}
	outFile := filepath.Join(e.dir, "out.assert")
	if code, out, errs := e.keyrack("alice", "sign", "-fetch", id2, "-o", outFile); code != 0 || out != "" {
		t.Fatalf("fetch: %d %s %s", code, out, errs)
	}
	got, _ := os.ReadFile(outFile)
	if _, err := asserts.Decode(got); err != nil || !bytes.Contains(got, []byte("model: line-70\n")) {
		t.Fatalf("fetched: %v\n%s", err, got)
	}

	// Outside the key's roles (model=line-.*): refused when proposed.
	bad := e.statementFile("other.json", strings.Replace(line7Statement, `"line-7"`, `"other-7"`, 1))
	code, out, errs = e.keyrack("alice", "sign", "-k", "line-key", bad)
	if code != 1 || out != "" || !strings.Contains(errs, "key-model") {
		t.Fatalf("outside the roles: %d %q %s", code, out, errs)
	}
}
