package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyrack/keyrack/appliance/store"
)

// The tests of this file play the store's administrator (threat model:
// write access to every table) against a real appliance on a SoftHSM
// token: every rewrite of the records is made on a copy of the store,
// the way someone with the file would, and `keyrack audit verify` must
// name what is wrong; the untouched store must pass.

func openRaw(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open(store.SQLiteDriver, "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// snapshot copies the live store (consistently: VACUUM INTO) to a new file.
func (e *env) snapshot(name string) string {
	e.t.Helper()
	out := filepath.Join(e.dir, name+".db")
	if _, err := openRaw(e.t, filepath.Join(e.dir, "keyrack.db")).Exec(`VACUUM INTO ?`, out); err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *env) checkpoint() store.Checkpoint {
	e.t.Helper()
	c, made, err := e.app.Checkpoint(context.Background())
	if err != nil || !made {
		e.t.Fatalf("checkpoint: made %v, %v", made, err)
	}
	return c
}

func sqlDo(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func maxSeq(t *testing.T, db *sql.DB) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRow(`SELECT max(seq) FROM audit`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// appendEvent appends an event with a correct link, as a forger would.
func appendEvent(t *testing.T, db *sql.DB, actor, action, subject, details string) int64 {
	t.Helper()
	var seq int64
	var prev []byte
	if err := db.QueryRow(`SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1`).Scan(&seq, &prev); err != nil {
		t.Fatal(err)
	}
	seq++
	us := time.Now().UnixMicro()
	body, _ := json.Marshal(struct {
		Seq     int64  `json:"seq"`
		TimeUS  int64  `json:"time_us"`
		Actor   string `json:"actor"`
		Action  string `json:"action"`
		Subject string `json:"subject"`
		Result  string `json:"result"`
		Details string `json:"details"`
	}{seq, us, actor, action, subject, "ok", details})
	h := sha256.New()
	h.Write(prev)
	h.Write(body)
	sqlDo(t, db, `INSERT INTO audit (seq, time_us, actor, action, subject, result, details, prev_hash, hash) VALUES (?, ?, ?, ?, ?, 'ok', ?, ?, ?)`,
		seq, us, actor, action, subject, details, prev, h.Sum(nil))
	return seq
}

var notCovered = regexp.MustCompile(`signed up to event (\d+); not yet covered: (\d+) events\n`)

func TestAuditCheckpointsAgainstTheStoreAdministrator(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	apiKey := e.lineSetup()
	for i := 0; i < 2; i++ {
		if code, out, errs := e.register(apiKey); code != 0 {
			t.Fatalf("register: %d %s %s", code, out, errs)
		}
	}
	c1 := e.checkpoint()
	// An idle appliance makes no checkpoint: nothing but c1's own event
	// happened.
	if _, made, err := e.app.Checkpoint(ctx); made || err != nil {
		t.Fatalf("a checkpoint with nothing new: made %v, %v", made, err)
	}
	early := e.snapshot("early") // an older copy of the store, for a rollback
	if code, out, errs := e.register(apiKey); code != 0 {
		t.Fatalf("register: %d %s %s", code, out, errs)
	}
	_, out, _ := e.keyrack("alice", "keys", "generate", "late-key", "-role", "serial")
	e.keyrack("bob", "approve", proposalID(t, out))
	c2 := e.checkpoint()
	if c2.PrevSeq != c1.Seq || c2.Seq <= c1.EventSeq {
		t.Fatalf("second checkpoint %+v does not extend the first %+v", c2, c1)
	}
	code, headJSON, errs := e.keyrack("", "audit", "head")
	if code != 0 || !strings.Contains(headJSON, fmt.Sprintf(`"seq": %d`, c2.Seq)) {
		t.Fatalf("audit head: %d %s %s", code, headJSON, errs)
	}
	head := filepath.Join(e.dir, "head.json")
	if err := os.WriteFile(head, []byte(headJSON), 0o644); err != nil {
		t.Fatal(err)
	}
	// Work after the head, not yet covered by any checkpoint.
	if code, out, errs := e.register(apiKey); code != 0 {
		t.Fatalf("register: %d %s %s", code, out, errs)
	}
	live := filepath.Join(e.dir, "keyrack.db")

	// The untouched store passes, from the file, over the API and as an
	// export, and the uncovered events are counted.
	for _, run := range [][]string{
		{"", "audit", "verify", "-db", live, "-since-head", head},
		{"bob", "audit", "verify", "-since-head", head}, // bob's login is an event more
	} {
		code, out, errs := e.keyrack(run[0], run[1:]...)
		last := maxSeq(t, openRaw(t, live))
		m := notCovered.FindStringSubmatch(out)
		if code != 0 || m == nil || m[1] != strconv.FormatInt(c2.Seq, 10) || m[2] != strconv.FormatInt(last-c2.Seq, 10) ||
			!strings.Contains(out, fmt.Sprintf("extends the saved head (event %d", c2.Seq)) {
			t.Fatalf("%v on the untouched store (last event %d, head %d): %d %q %s", run[1:], last, c2.Seq, code, out, errs)
		}
	}
	var rows int
	openRaw(t, live).QueryRow(`SELECT count(*) FROM signing_log`).Scan(&rows)
	if code, out, _ := e.keyrack("", "audit", "verify", "-db", live); code != 0 || rows < 3 ||
		!strings.Contains(out, fmt.Sprintf("signing log: %d rows match their signature events", rows)) {
		t.Fatalf("the signing log against the chain: %d %q", code, out)
	}
	export := filepath.Join(e.dir, "audit.jsonl")
	if code, out, errs := e.keyrack("bob", "audit", "export", "-o", export); code != 0 {
		t.Fatalf("export: %d %s %s", code, out, errs)
	}
	if code, out, errs := e.keyrack("", "audit", "verify", "-file", export, "-since-head", head); code != 0 || !strings.Contains(out, "extends the saved head") {
		t.Fatalf("verify -file: %d %q %s", code, out, errs)
	}

	// broken runs verify -db on a tampered copy, with the head or not.
	broken := func(t *testing.T, path string, withHead bool, want string) {
		t.Helper()
		args := []string{"audit", "verify", "-db", path}
		if withHead {
			args = append(args, "-since-head", head)
		}
		code, out, _ := e.keyrack("", args...)
		if code != 1 || !strings.Contains(out, want) {
			t.Fatalf("verify (head %v): %d %q, want %q", withHead, code, out, want)
		}
	}
	copyOf := func(t *testing.T) (string, *sql.DB) {
		path := e.snapshot(strings.ReplaceAll(t.Name(), "/", "-"))
		return path, openRaw(t, path)
	}

	t.Run("delete the tail", func(t *testing.T) {
		path, db := copyOf(t)
		keep := c2.Seq - 2
		sqlDo(t, db, `DELETE FROM audit WHERE seq > ?`, keep)
		sqlDo(t, db, `DELETE FROM audit_checkpoints WHERE event_seq > ?`, keep)
		sqlDo(t, db, `DELETE FROM signing_log WHERE id > (SELECT COALESCE(max(json_extract(details, '$.log_id')), 0) FROM audit)`)
		// Tidy: without a head, the rest agrees with itself.
		if code, out, _ := e.keyrack("", "audit", "verify", "-db", path); code != 0 {
			t.Fatalf("a tidy truncation without a head: %d %q", code, out)
		}
		broken(t, path, true, fmt.Sprintf("BROKEN at event %d: missing: the saved head covers events to %d", keep+1, c2.Seq))
	})
	t.Run("edit an event and recompute every hash", func(t *testing.T) {
		path, db := copyOf(t)
		var seq int64
		if err := db.QueryRow(`SELECT seq FROM audit WHERE action = 'import-key.generate'`).Scan(&seq); err != nil {
			t.Fatal(err)
		}
		rehashFrom(t, db, seq, `{"fingerprint":"00"}`)
		want := fmt.Sprintf("BROKEN at event 1: the checkpoint recorded at event %d signed hash", c1.EventSeq)
		broken(t, path, false, want)
		broken(t, path, true, want)
		broken(t, path, true, fmt.Sprintf("events 1 to %d were rewritten and their hashes recomputed", c1.Seq))
	})
	t.Run("reorder", func(t *testing.T) {
		path, db := copyOf(t)
		// Two neighbours that are not signatures (swapping those, the
		// signing log's order already tells).
		var a int64
		if err := db.QueryRow(`SELECT x.seq FROM audit x JOIN audit y ON y.seq = x.seq + 1 WHERE x.seq > ? AND y.seq < ?
			AND x.action NOT LIKE '%.sign' AND y.action NOT LIKE '%.sign' AND x.action <> y.action ORDER BY x.seq LIMIT 1`, c1.EventSeq, c2.Seq).Scan(&a); err != nil {
			t.Fatal(err)
		}
		b := a + 1
		cols := `time_us, actor, action, subject, result, details`
		sqlDo(t, db, `CREATE TEMP TABLE swap AS SELECT seq, `+cols+` FROM audit WHERE seq IN (?, ?)`, a, b)
		sqlDo(t, db, `UPDATE audit SET (`+cols+`) = (SELECT `+cols+` FROM swap WHERE swap.seq = ? + ? - audit.seq) WHERE seq IN (?, ?)`, a, b, a, b)
		var details string
		db.QueryRow(`SELECT details FROM audit WHERE seq = ?`, a).Scan(&details)
		rehashFrom(t, db, a, details)
		broken(t, path, false, fmt.Sprintf("BROKEN at event %d: the checkpoint recorded at event %d signed hash", c1.Seq+1, c2.EventSeq))
		broken(t, path, true, fmt.Sprintf("BROKEN at event %d: the saved head (signed ", c1.Seq+1))
		broken(t, path, true, fmt.Sprintf("events %d to %d were rewritten", c1.Seq+1, c2.Seq))
	})
	t.Run("alter a checkpoint", func(t *testing.T) {
		path, db := copyOf(t)
		var details string
		db.QueryRow(`SELECT details FROM audit WHERE seq = ?`, c2.EventSeq).Scan(&details)
		var d map[string]any
		json.Unmarshal([]byte(details), &d)
		d["time_us"] = c2.Time.Add(-time.Hour).UnixMicro()
		altered, _ := json.Marshal(d)
		rehashFrom(t, db, c2.EventSeq, string(altered))
		broken(t, path, false, fmt.Sprintf("BROKEN at event %d: checkpoint of event %d: its signature does not verify with audit key %s", c2.EventSeq, c2.Seq, c2.Key))
	})
	// A checkpoint signed outside the token over a rewritten tail.
	forge := func(t *testing.T, db *sql.DB, recordKey bool) (string, int64) {
		priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
		fp := store.AuditKeyFingerprint(der)
		if recordKey {
			kd, _ := json.Marshal(map[string]any{"fingerprint": fp, "public_key": der, "algorithm": store.AuditKeyAlgorithm, "token_serial": "x"})
			appendEvent(t, db, "system", store.ActionAuditKey, fp, string(kd))
		}
		var seq int64
		var hash []byte
		db.QueryRow(`SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1`).Scan(&seq, &hash)
		var lastSeq int64
		var lastHead []byte
		db.QueryRow(`SELECT seq, head FROM audit_checkpoints ORDER BY seq DESC LIMIT 1`).Scan(&lastSeq, &lastHead)
		c := store.Checkpoint{Seq: seq, Head: hash, Time: time.Now().UTC().Truncate(time.Microsecond), Appliance: c2.Appliance,
			PrevSeq: lastSeq, PrevHead: lastHead, Key: fp}
		c.Signature, _ = ecdsa.SignASN1(rand.Reader, priv, c.SignedDigest())
		cd, _ := json.Marshal(map[string]any{"seq": c.Seq, "head": hex.EncodeToString(c.Head), "time_us": c.Time.UnixMicro(),
			"appliance": c.Appliance, "prev_seq": c.PrevSeq, "prev_head": hex.EncodeToString(c.PrevHead), "key": fp, "signature": base64.StdEncoding.EncodeToString(c.Signature)})
		ev := appendEvent(t, db, "system", store.ActionAuditCheckpoint, fmt.Sprintf("checkpoint %d", c.Seq), string(cd))
		sqlDo(t, db, `INSERT INTO audit_checkpoints (seq, head, time_us, appliance, prev_seq, prev_head, key, signature, event_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			c.Seq, c.Head, c.Time.UnixMicro(), c.Appliance, c.PrevSeq, c.PrevHead, fp, c.Signature, ev)
		if recordKey {
			sqlDo(t, db, `INSERT INTO audit_keys (fingerprint, public_key, token_serial, event_seq, created_us) VALUES (?, ?, 'x', ?, 0)`, fp, der, ev-1)
		}
		return fp, ev
	}
	t.Run("forge a checkpoint with another key", func(t *testing.T) {
		path, db := copyOf(t)
		fp, ev := forge(t, db, false)
		broken(t, path, false, fmt.Sprintf("BROKEN at event %d: checkpoint of event %d: it is signed by audit key %s, which the chain does not record", ev, ev-1, fp))
	})
	t.Run("forge a checkpoint with a key slipped into the chain", func(t *testing.T) {
		// A key recorded after the saved head is one nothing outside
		// the store vouches for: verify says so, for officers to compare
		// with the fingerprints they confirmed.
		path, db := copyOf(t)
		fp, ev := forge(t, db, true)
		code, out, _ := e.keyrack("", "audit", "verify", "-db", path, "-since-head", head)
		if code != 0 || !strings.Contains(out, fmt.Sprintf("audit key %s (event %d) (recorded after the saved head", fp, ev-1)) ||
			strings.Contains(out, c2.Key+fmt.Sprintf(" (event %d) (recorded after", ev-1)) {
			t.Fatalf("a key slipped in after the head: %d %q", code, out)
		}
	})
	t.Run("restore an older copy", func(t *testing.T) {
		var end int64
		openRaw(t, early).QueryRow(`SELECT max(seq) FROM audit`).Scan(&end)
		if code, out, _ := e.keyrack("", "audit", "verify", "-db", early); code != 0 {
			t.Fatalf("the older copy on its own: %d %q", code, out)
		}
		broken(t, early, true, fmt.Sprintf("BROKEN at event %d: missing: the saved head covers events to %d", end+1, c2.Seq))
	})
	t.Run("a signing-log row without its event", func(t *testing.T) {
		path, db := copyOf(t)
		sqlDo(t, db, `INSERT INTO signing_log (time_us, type, key_id, brand, model, serial, client, digest) VALUES (1, 'serial', 'k', 'brand-x', 'line-7', 'L7-999', 'line-7-client', 'forged')`)
		var id int64
		db.QueryRow(`SELECT max(id) FROM signing_log`).Scan(&id)
		broken(t, path, true, fmt.Sprintf("BROKEN: signing-log row %d: serial brand-x/line-7/L7-999 digest forged has no signature event", id))
	})
	t.Run("delete a signature event", func(t *testing.T) {
		// The last signature is after the head and no checkpoint covers
		// it: the signing log still shows it.
		path, db := copyOf(t)
		var seq, id int64
		db.QueryRow(`SELECT seq, json_extract(details, '$.log_id') FROM audit WHERE action = 'serial.sign' ORDER BY seq DESC LIMIT 1`).Scan(&seq, &id)
		if seq <= c2.EventSeq {
			t.Fatalf("the last signature event %d is not after the head's checkpoint (%d)", seq, c2.EventSeq)
		}
		sqlDo(t, db, `DELETE FROM audit WHERE seq >= ?`, seq)
		broken(t, path, true, fmt.Sprintf("BROKEN: signing-log row %d: serial brand-x/line-7/", id))
	})
	t.Run("delete a signing-log row", func(t *testing.T) {
		path, db := copyOf(t)
		var seq, id int64
		db.QueryRow(`SELECT seq, json_extract(details, '$.log_id') FROM audit WHERE action = 'serial.sign' ORDER BY seq LIMIT 1`).Scan(&seq, &id)
		sqlDo(t, db, `DELETE FROM signing_log WHERE id = ?`, id)
		broken(t, path, false, fmt.Sprintf("BROKEN at event %d: this signature event records signing-log row %d", seq, id))
	})
	t.Run("an altered export", func(t *testing.T) {
		b, err := os.ReadFile(export)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitAfter(string(b), "\n")
		alteredFile := filepath.Join(e.dir, "altered.jsonl")
		// Event 3 is line 4 (after the header).
		altered := strings.Replace(lines[3], `"result":"ok"`, `"result":"refused"`, 1)
		if altered == lines[3] {
			t.Fatalf("line 4 of the export: %s", lines[3])
		}
		os.WriteFile(alteredFile, []byte(strings.Join(lines[:3], "")+altered+strings.Join(lines[4:], "")), 0o644)
		if code, out, _ := e.keyrack("", "audit", "verify", "-file", alteredFile); code != 1 || !strings.Contains(out, "BROKEN at event 3: content does not match its hash") {
			t.Fatalf("an altered export: %d %q", code, out)
		}
		os.WriteFile(alteredFile, []byte(strings.Join(lines[:len(lines)-2], "")), 0o644)
		if code, _, errs := e.keyrack("", "audit", "verify", "-file", alteredFile); code != 1 || !strings.Contains(errs, "the export is incomplete") {
			t.Fatalf("a cut export: %d %q", code, errs)
		}
	})
}
