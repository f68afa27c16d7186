package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
)

// seedLog writes n signing-log rows straight into the appliance's store
// (two types, three models), their ids and digests as long as real ones
// (64 characters of base64url), and returns them as numbered.
func (e *env) seedLog(n int) []store.LogEntry {
	e.t.Helper()
	out := make([]store.LogEntry, 0, n)
	for done := 0; done < n; {
		batch := min(n-done, 5000)
		err := e.db.Update(context.Background(), func(tx *store.Tx) error {
			for i := done; i < done+batch; i++ {
				le := store.LogEntry{Type: []string{"serial", "model"}[i%2], KeyID: fmt.Sprintf("k%063d", i%7), Brand: "brand-x",
					Model: fmt.Sprintf("line-%d", i%3), Client: "line-a", Digest: fmt.Sprintf("d%063d", i)}
				if le.Type == "serial" {
					le.Serial, le.DeviceKeyID = fmt.Sprintf("SN-%d", i), fmt.Sprintf("v%063d", i)
				}
				id, err := tx.LogSignature(le)
				if err != nil {
					return err
				}
				le.ID = id
				out = append(out, le)
			}
			return nil
		})
		if err != nil {
			e.t.Fatal(err)
		}
		done += batch
	}
	return out
}

func ids(rows []store.LogEntry, keep func(store.LogEntry) bool) []string {
	var out []string
	for _, r := range rows {
		if keep(r) {
			out = append(out, strconv.FormatInt(r.ID, 10))
		}
	}
	return out
}

// TestLogExportsEverything: 2,500 rows, more than a page, come out of
// keyrack log -csv, -json and the table each exactly once and in order,
// with filters; -limit prints that many and says where the rest starts,
// and -after goes on from there; a progress line goes to stderr on a
// terminal only.
func TestLogExportsEverything(t *testing.T) {
	e := newEnv(t)
	rows := e.seedLog(2500)
	all := ids(rows, func(store.LogEntry) bool { return true })
	serials := ids(rows, func(r store.LogEntry) bool { return r.Type == "serial" })
	line1 := ids(rows, func(r store.LogEntry) bool { return r.Model == "line-1" })

	csvIDs := func(args ...string) ([]string, string) {
		t.Helper()
		code, out, errs := e.keyrack("bob", append([]string{"log", "-csv"}, args...)...)
		if code != 0 {
			t.Fatalf("log -csv %v: %d %s", args, code, errs)
		}
		recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
		if err != nil || len(recs) == 0 || recs[0][0] != "id" {
			t.Fatalf("log -csv %v: %v\n%.300s", args, err, out)
		}
		var got []string
		for _, r := range recs[1:] {
			got = append(got, r[0])
		}
		return got, errs
	}
	jsonIDs := func(args ...string) ([]string, string) {
		t.Helper()
		code, out, errs := e.keyrack("bob", append([]string{"log", "-json"}, args...)...)
		if code != 0 {
			t.Fatalf("log -json %v: %d %s", args, code, errs)
		}
		var got []string
		for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
			var le wire.LogEntry
			if err := json.Unmarshal([]byte(l), &le); err != nil {
				t.Fatalf("log -json %v: line %q: %v", args, l, err)
			}
			got = append(got, strconv.FormatInt(le.ID, 10))
		}
		return got, errs
	}
	same := func(what string, got, want []string) {
		t.Helper()
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("%s: %d rows, want %d (first difference near %v)", what, len(got), len(want), firstDiff(got, want))
		}
	}
	got, errs := csvIDs()
	same("log -csv", got, all)
	if errs != "" {
		t.Fatalf("log -csv to a buffer printed progress: %q", errs)
	}
	got, _ = csvIDs("-type", "serial")
	same("log -csv -type serial", got, serials)
	got, _ = jsonIDs("-model", "line-1")
	same("log -json -model line-1", got, line1)
	got, _ = jsonIDs()
	same("log -json", got, all)

	code, out, _ := e.keyrack("bob", "log")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != 0 || !strings.HasPrefix(lines[0], "ID  ") {
		t.Fatalf("log: %d\n%.300s", code, out)
	}
	got = nil
	for _, l := range lines[1:] {
		got = append(got, strings.Fields(l)[0])
	}
	same("log (table)", got, all)

	// A limit says so, and -after goes on where it says.
	got, errs = jsonIDs("-limit", "1500")
	same("log -json -limit 1500", got, all[:1500])
	m := regexp.MustCompile(`1500 rows shown, more match: continue with -after (\d+)\n`).FindStringSubmatch(errs)
	if m == nil || m[1] != all[1499] {
		t.Fatalf("log -limit 1500: stderr %q", errs)
	}
	got, errs = jsonIDs("-after", m[1])
	same("log -json -after", got, all[1500:])
	if errs != "" {
		t.Fatalf("the rest: stderr %q", errs)
	}
	got, errs = csvIDs("-type", "serial", "-limit", "10")
	same("log -csv -limit 10", got, serials[:10])
	if !strings.Contains(errs, "10 rows shown, more match: continue with -after "+serials[9]) {
		t.Fatalf("log -csv -limit 10: stderr %q", errs)
	}
	// Exactly as many as match: nothing more to say.
	if _, errs = jsonIDs("-after", all[2497]); errs != "" {
		t.Fatalf("the last two rows: stderr %q", errs)
	}
	if _, errs := jsonIDs("-after", all[2497], "-limit", "2"); errs != "" {
		t.Fatalf("the last two rows with -limit 2: stderr %q", errs)
	}

	// On a terminal, the progress line.
	defer func(f func(io.Writer) bool) { stderrIsTerminal = f }(stderrIsTerminal)
	stderrIsTerminal = func(io.Writer) bool { return true }
	savedAfter, savedEvery := progressAfter, progressEvery
	progressAfter, progressEvery = 0, 0
	defer func() { progressAfter, progressEvery = savedAfter, savedEvery }()
	if _, errs := csvIDs(); !strings.HasSuffix(errs, "\rsigning log: 2500 rows, done\n") {
		t.Fatalf("log -csv on a terminal: stderr %q", errs)
	}
	if _, errs := jsonIDs(); !strings.HasSuffix(errs, "\rsigning log: 2500 rows, done\n") {
		t.Fatalf("log -json on a terminal: stderr %q", errs)
	}
}

// TestAuditListsEverything: keyrack audit prints the whole chain, more
// than a page of it, each event once and in order, as a table or JSON
// lines; -limit says where the rest starts.
func TestAuditListsEverything(t *testing.T) {
	e := newEnv(t)
	err := e.db.Update(context.Background(), func(tx *store.Tx) error {
		for i := 0; i < 2500; i++ {
			if _, err := tx.Audit("system", "test.event", strconv.Itoa(i), "ok", nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	consecutive := func(what string, seqs []int64, from int64) {
		t.Helper()
		if len(seqs) < 2500 {
			t.Fatalf("%s: %d events", what, len(seqs))
		}
		for i, s := range seqs {
			if s != from+int64(i) {
				t.Fatalf("%s: event %d is number %d", what, i, s)
			}
		}
	}
	code, out, errs := e.keyrack("bob", "audit")
	if code != 0 || errs != "" {
		t.Fatalf("audit: %d %s", code, errs)
	}
	var seqs []int64
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		n, err := strconv.ParseInt(strings.SplitN(l, "\t", 2)[0], 10, 64)
		if err != nil {
			t.Fatalf("audit line %q", l)
		}
		seqs = append(seqs, n)
	}
	consecutive("audit", seqs, 1)
	code, out, _ = e.keyrack("bob", "audit", "-json")
	seqs = nil
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var ev wire.AuditEvent
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("audit -json line %q: %v", l, err)
		}
		seqs = append(seqs, ev.Seq)
	}
	consecutive("audit -json", seqs, 1)
	code, out, errs = e.keyrack("bob", "audit", "-after", "100", "-limit", "1200")
	if n := strings.Count(out, "\n"); code != 0 || n != 1200 || !strings.HasPrefix(out, "101\t") ||
		!strings.Contains(errs, "1200 events shown, more match: continue with -after 1300\n") {
		t.Fatalf("audit -after 100 -limit 1200: %d, %d lines, stderr %q", code, n, errs)
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
