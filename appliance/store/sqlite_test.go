package store

import (
	"context"
	"database/sql"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	// The cgo driver, for BenchmarkSerialWrites and the tests that run
	// with each driver; the programs link only SQLiteDriver's.
	_ "github.com/mattn/go-sqlite3"
)

// TestSQLitePragmas reads back, with each driver, what the DSN asks of
// every connection: a driver that ignored a parameter (a misspelt key, a
// syntax of the other driver's) would otherwise go unnoticed until a
// crash lost a write or a foreign key went unchecked.
func TestSQLitePragmas(t *testing.T) { drivers(t, testSQLitePragmas) }

func testSQLitePragmas(t *testing.T, driver string) {
	ctx := context.Background()
	db, path := openTestDriver(t, driver)
	want := map[string]string{"journal_mode": "wal", "synchronous": "1", "foreign_keys": "1", "busy_timeout": "10000"}
	check := func(who string, q func(string) *sql.Row, want map[string]string) {
		t.Helper()
		for p, w := range want {
			var v string
			if err := q(`PRAGMA ` + p).Scan(&v); err != nil || v != w {
				t.Errorf("%s: PRAGMA %s = %q (%v), want %q", who, p, v, err, w)
			}
		}
	}
	check("writer", func(q string) *sql.Row { return db.wconn.QueryRowContext(ctx, q) }, want)
	// Several readers at once, so that more than one pooled connection
	// is asked.
	var txs []*sql.Tx
	for i := 0; i < 3; i++ {
		tx, err := db.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		txs = append(txs, tx)
	}
	for i, tx := range txs {
		check("reader "+strconv.Itoa(i), func(q string) *sql.Row { return tx.QueryRow(q) }, want)
	}
	db.Close()

	ro, err := openSQLiteReadOnly(ctx, path, driver)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	check("read-only", func(q string) *sql.Row { return ro.db.QueryRowContext(ctx, q) }, map[string]string{"journal_mode": "wal", "busy_timeout": "10000"})
	if _, err := ro.db.ExecContext(ctx, `INSERT INTO settings (name, value) VALUES ('x', 'y')`); err == nil || !strings.Contains(err.Error(), "readonly") {
		t.Errorf("a write on a read-only open: %v, want a readonly error", err)
	}
}

// TestSQLiteReadersWhileWriting: a View runs while the writer is inside a
// transaction. The cgo driver begins every transaction of a pool with the
// pool's _txlock, so readers and the writer must not share one: a reader
// that began IMMEDIATE would wait for the writer's commit.
func TestSQLiteReadersWhileWriting(t *testing.T) { drivers(t, testSQLiteReadersWhileWriting) }

func testSQLiteReadersWhileWriting(t *testing.T, driver string) {
	ctx := context.Background()
	db, _ := openTestDriver(t, driver)
	if err := db.Update(ctx, func(tx *Tx) error { return tx.SetSetting("k", "old") }); err != nil {
		t.Fatal(err)
	}
	inside, release := make(chan struct{}), make(chan struct{})
	updated := make(chan error, 1)
	go func() {
		updated <- db.Update(ctx, func(tx *Tx) error {
			if err := tx.SetSetting("k2", "new"); err != nil {
				return err
			}
			close(inside)
			<-release
			return nil
		})
	}()
	<-inside
	start := time.Now()
	var v string
	var uncommitted error
	err := db.View(ctx, func(tx *Tx) error {
		var err error
		v, err = tx.Setting("k")
		_, uncommitted = tx.Setting("k2")
		return err
	})
	close(release)
	if err != nil || v != "old" || !errors.Is(uncommitted, ErrNotFound) {
		t.Errorf("a read during a write transaction: %q, %v, uncommitted write %v; want the committed %q and not the other", v, err, uncommitted, "old")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("a read waited %v for the writer", d)
	}
	if err := <-updated; err != nil {
		t.Fatal(err)
	}
}

// TestSQLiteBusy: while another connection (another process, say) holds
// the write lock, the writer waits under the busy timeout instead of
// failing, then commits; the store's own transactions take the write
// lock when they begin (_txlock=immediate), so the wait is at BEGIN.
func TestSQLiteBusy(t *testing.T) { drivers(t, testSQLiteBusy) }

func testSQLiteBusy(t *testing.T, driver string) {
	ctx := context.Background()
	db, path := openTestDriver(t, driver)
	other, err := sql.Open(driver, "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	updated := make(chan error, 1)
	go func() { updated <- db.Update(ctx, func(tx *Tx) error { return tx.SetSetting("k", "v") }) }()
	select {
	case err := <-updated:
		t.Fatalf("an update while another connection held the write lock returned %v; want it to wait", err)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := conn.ExecContext(ctx, `COMMIT`); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-updated:
		if err != nil {
			t.Fatalf("the update after the lock was let go: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the update did not commit after the lock was let go")
	}
}

// TestSQLiteUnique: both drivers' unique-constraint errors are what
// isUnique matches, and a foreign key is enforced.
func TestSQLiteUnique(t *testing.T) { drivers(t, testSQLiteUnique) }

func testSQLiteUnique(t *testing.T, driver string) {
	ctx := context.Background()
	db, _ := openTestDriver(t, driver)
	ins := func() error {
		_, err := db.wconn.ExecContext(ctx, `INSERT INTO settings (name, value) VALUES ('dup', '1')`)
		return err
	}
	if err := ins(); err != nil {
		t.Fatal(err)
	}
	if err := ins(); !isUnique(err) {
		t.Errorf("a duplicate insert: %v, which isUnique does not match", err)
	}
	if err := ins(); errors.Is(err, ErrExists) {
		t.Error("a raw duplicate insert is ErrExists; only the store's wrapping should make it so")
	}
}

// TestSQLiteBackupDrivers: VACUUM INTO with a bound path works with each
// driver, and the copy opens read-only with the same data.
func TestSQLiteBackupDrivers(t *testing.T) { drivers(t, testSQLiteBackup) }

func testSQLiteBackup(t *testing.T, driver string) {
	ctx := context.Background()
	db, path := openTestDriver(t, driver)
	if err := db.Update(ctx, func(tx *Tx) error { return tx.SetSetting("k", "v") }); err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(filepath.Dir(path), "copy.db")
	if err := db.BackupTo(ctx, copyPath); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(copyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup: %v, %v", fi, err)
	}
	ro, err := openSQLiteReadOnly(ctx, copyPath, driver)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	var v string
	if err := ro.View(ctx, func(tx *Tx) (err error) { v, err = tx.Setting("k"); return }); err != nil || v != "v" {
		t.Fatalf("the copy's setting: %q, %v", v, err)
	}
}

// TestPlaceholderOrder: in every SQL literal of the store, $N first
// appear in order ($1, $2, ...). SQLite takes $N for a named parameter
// numbered in order of appearance, and the cgo driver binds arguments by
// that number, not by N: "... $10 ... $9" would bind the 9th argument to
// $10. modernc and PostgreSQL read N, so only the cgo driver would go
// wrong, silently.
func TestPlaceholderOrder(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	ph := regexp.MustCompile(`\$([0-9]+)`)
	fset := token.NewFileSet()
	for _, f := range files {
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(af, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil {
				return true
			}
			seen, next := map[string]bool{}, 1
			for _, m := range ph.FindAllStringSubmatch(s, -1) {
				if seen[m[1]] {
					continue
				}
				if m[1] != strconv.Itoa(next) {
					t.Errorf("%s: $%s appears first where $%d should", fset.Position(lit.Pos()), m[1], next)
					return true
				}
				seen[m[1]] = true
				next++
			}
			return true
		})
	}
}
