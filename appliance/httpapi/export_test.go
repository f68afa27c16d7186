package httpapi

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
)

// seedSigningLog writes n signing-log rows straight into the store, in a
// few transactions, of two types, three models and two clients, so that
// filters select a part of them; one serial in 500 looks like a formula,
// as an older appliance (or the store's administrator) could have left
// it. It returns the rows as the store numbered them.
func seedSigningLog(t testing.TB, db *store.DB, n int) []store.LogEntry {
	t.Helper()
	out := make([]store.LogEntry, 0, n)
	for done := 0; done < n; {
		batch := min(n-done, 5000)
		err := db.Update(context.Background(), func(tx *store.Tx) error {
			for i := done; i < done+batch; i++ {
				e := store.LogEntry{Type: []string{"serial", "model"}[i%2], KeyID: "-k" + strconv.Itoa(i%7), Brand: "brand-x",
					Model: fmt.Sprintf("line-%d", i%3), Client: []string{"line-a", "sign-a"}[i/2%2], Revision: i % 4,
					Digest: fmt.Sprintf("d%08d", i)}
				if e.Type == "serial" {
					e.Serial, e.DeviceKeyID = fmt.Sprintf("SN-%d", i), "dk"+strconv.Itoa(i)
					if i%500 == 0 {
						e.Serial = fmt.Sprintf("=HYPERLINK(%d)", i)
					}
				}
				id, err := tx.LogSignature(e)
				if err != nil {
					return err
				}
				e.ID = id
				out = append(out, e)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		done += batch
	}
	return out
}

// officerGet sends an officer's GET and returns the whole answer.
func (e *ceremonyEnv) officerGet(officer, path string) (*http.Response, []byte) {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.ts.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+e.creds[officer])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("GET %s: %v", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("GET %s: %d %s", path, resp.StatusCode, raw)
	}
	return resp, raw
}

// TestSigningLogPagesAndExport: with 2,500 rows, more than a page of the
// JSON answer (1,000) and of the CSV export's reads from the store
// (appliance.ExportPage), following next gives every matching row
// exactly once and in order, the pages before the last say that more
// follow (next, Link), the last does not; the CSV export without a limit
// is every matching row, in order, counted in its trailer; with a limit
// it says where the next page starts. Formula-like cells stay escaped in
// the streamed CSV.
func TestSigningLogPagesAndExport(t *testing.T) {
	e := newCeremonyEnv(t, 2, "1h")
	seeded := seedSigningLog(t, e.db, 2500)
	if appliance.ExportPage >= 2500 {
		t.Fatalf("the test needs more rows than a page of %d", appliance.ExportPage)
	}
	for _, f := range []struct {
		query string
		match func(store.LogEntry) bool
	}{
		{"", func(store.LogEntry) bool { return true }},
		{"type=serial", func(r store.LogEntry) bool { return r.Type == "serial" }},
		{"type=model&model=line-1&client=sign-a", func(r store.LogEntry) bool {
			return r.Type == "model" && r.Model == "line-1" && r.Client == "sign-a"
		}},
		{"after=" + strconv.FormatInt(seeded[700].ID, 10) + "&brand=brand-x", func(r store.LogEntry) bool { return r.ID > seeded[700].ID }},
	} {
		var want []store.LogEntry
		for _, r := range seeded {
			if f.match(r) {
				want = append(want, r)
			}
		}
		// JSON, page by page.
		var got []wire.LogEntry
		q, _ := url.ParseQuery(f.query)
		pages := 0
		for {
			resp, raw := e.officerGet("alice", "/v1/signing-log?"+q.Encode())
			var page wire.LogPage
			if err := json.Unmarshal(raw, &page); err != nil {
				t.Fatal(err)
			}
			pages++
			got = append(got, page.Entries...)
			link := resp.Header.Get("Link")
			if page.Next == 0 {
				if link != "" || len(got) != len(want) {
					t.Fatalf("%q: the last page (%d) has Link %q after %d of %d rows", f.query, pages, link, len(got), len(want))
				}
				break
			}
			if len(page.Entries) != 1000 || page.Next != page.Entries[len(page.Entries)-1].ID ||
				!strings.Contains(link, "after="+strconv.FormatInt(page.Next, 10)) || !strings.HasSuffix(link, `>; rel="next"`) {
				t.Fatalf("%q page %d: %d rows, next %d, Link %q", f.query, pages, len(page.Entries), page.Next, link)
			}
			// The Link is the request to send next, filters included.
			next, err := url.Parse(strings.TrimSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`))
			if err != nil || next.Path != "/v1/signing-log" {
				t.Fatalf("Link %q", link)
			}
			q = next.Query()
		}
		if pages != (len(want)+999)/1000 {
			t.Errorf("%q: %d pages for %d rows", f.query, pages, len(want))
		}
		for i := range want {
			if got[i].ID != want[i].ID || got[i].Serial != want[i].Serial || got[i].Digest != want[i].Digest {
				t.Fatalf("%q: row %d is %+v, want %+v", f.query, i, got[i], want[i])
			}
		}

		// CSV, the whole range in one answer.
		resp, raw := e.officerGet("alice", "/v1/signing-log?format=csv&"+f.query)
		recs, err := csv.NewReader(strings.NewReader(string(raw))).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != len(want)+1 || strings.Join(recs[0], ",") != strings.Join(csvHeader, ",") {
			t.Fatalf("%q: CSV of %d records for %d rows", f.query, len(recs), len(want))
		}
		if n := resp.Trailer.Get(wire.RowsTrailer); n != strconv.Itoa(len(want)) {
			t.Fatalf("%q: trailer %s %q, want %d", f.query, wire.RowsTrailer, n, len(want))
		}
		for i, w := range want {
			r := recs[i+1]
			serial := w.Serial
			if strings.HasPrefix(serial, "=") {
				serial = "'" + serial
			}
			if r[0] != strconv.FormatInt(w.ID, 10) || r[6] != serial || r[3] != "'"+w.KeyID || r[10] != w.Digest || r[8] != w.Client {
				t.Fatalf("%q: CSV row %d is %v, want %+v", f.query, i, r, w)
			}
		}
	}

	// CSV with a limit: that many rows, and where the rest starts.
	resp, raw := e.officerGet("alice", "/v1/signing-log?format=csv&type=serial&limit=10")
	recs, _ := csv.NewReader(strings.NewReader(string(raw))).ReadAll()
	if len(recs) != 11 || resp.Header.Get(wire.NextHeader) != recs[10][0] || !strings.Contains(resp.Header.Get("Link"), "after="+recs[10][0]) {
		t.Fatalf("limit=10: %d records, %s %q, Link %q", len(recs), wire.NextHeader, resp.Header.Get(wire.NextHeader), resp.Header.Get("Link"))
	}
	// Two rows of the last three say one more follows; the last two do
	// not.
	for _, tc := range []struct {
		after int64
		more  bool
	}{{seeded[len(seeded)-4].ID, true}, {seeded[len(seeded)-3].ID, false}} {
		resp, raw := e.officerGet("alice", "/v1/signing-log?format=csv&limit=2&after="+strconv.FormatInt(tc.after, 10))
		recs, _ := csv.NewReader(strings.NewReader(string(raw))).ReadAll()
		if h := resp.Header.Get(wire.NextHeader); len(recs) != 3 || (h != "") != tc.more {
			t.Fatalf("two rows after %d: %d records, %s %q", tc.after, len(recs), wire.NextHeader, h)
		}
	}
	// An empty range is a CSV of its header, counted.
	resp, raw = e.officerGet("alice", "/v1/signing-log?format=csv&model=line-7")
	if string(raw) != strings.Join(csvHeader, ",")+"\n" || resp.Trailer.Get(wire.RowsTrailer) != "0" {
		t.Fatalf("an empty export: %q, trailer %q", raw, resp.Trailer.Get(wire.RowsTrailer))
	}
	for _, bad := range []string{"limit=0", "limit=10001", "after=-1", "format=csv&limit=x"} {
		req, _ := http.NewRequest("GET", e.ts.URL+"/v1/signing-log?"+bad, nil)
		req.Header.Set("Authorization", "Bearer "+e.creds["alice"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d", bad, resp.StatusCode)
		}
	}
}

// TestAuditPages: with 2,500 events, following next from GET /v1/audit
// gives every event exactly once and in order; a page before the last
// says more follow, the last does not.
func TestAuditPages(t *testing.T) {
	e := newCeremonyEnv(t, 2, "1h")
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
	var total int64
	e.db.View(context.Background(), func(tx *store.Tx) (err error) { total, err = tx.LastAuditSeq(); return err })
	var seqs []int64
	after, pages := int64(0), 0
	for {
		resp, raw := e.officerGet("alice", fmt.Sprintf("/v1/audit?after=%d&limit=1000", after))
		var page wire.AuditPage
		if err := json.Unmarshal(raw, &page); err != nil {
			t.Fatal(err)
		}
		pages++
		for _, ev := range page.Events {
			seqs = append(seqs, ev.Seq)
		}
		if page.Next == 0 {
			if resp.Header.Get("Link") != "" {
				t.Fatalf("the last page has a Link")
			}
			break
		}
		if len(page.Events) != 1000 || page.Next != page.Events[999].Seq || !strings.Contains(resp.Header.Get("Link"), fmt.Sprintf("after=%d", page.Next)) {
			t.Fatalf("page %d: %d events, next %d, Link %q", pages, len(page.Events), page.Next, resp.Header.Get("Link"))
		}
		after = page.Next
	}
	// The logins of the environment's officers come after the seeded
	// events: the chain as it is when read.
	if int64(len(seqs)) < total || total < 2500 {
		t.Fatalf("%d events read, %d in the chain", len(seqs), total)
	}
	for i, s := range seqs {
		if s != int64(i+1) {
			t.Fatalf("event %d is number %d", i, s)
		}
	}
	// The default page is 100, and says more follow.
	_, raw := e.officerGet("alice", "/v1/audit")
	var page wire.AuditPage
	if json.Unmarshal(raw, &page); len(page.Events) != 100 || page.Next != 100 {
		t.Fatalf("default page: %d events, next %d", len(page.Events), page.Next)
	}
}
