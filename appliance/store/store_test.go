package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyrack/keyrack/appliance/store/pgtest"
)

// pg is a throwaway PostgreSQL server for this test binary: the store's
// tests run against SQLite and PostgreSQL alike.
var pg *pgtest.Cluster

func TestMain(m *testing.M) {
	var err error
	if pg, err = pgtest.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	pg.Stop()
	os.Exit(code)
}

// sqliteDrivers are the SQLite drivers the store's tests run with, the
// production one (SQLiteDriver) first: the other is kept for the
// benchmark that compares them (BenchmarkSerialWrites), and so that a
// switch of driver finds everything already tested with it.
var sqliteDrivers = []string{DriverPure, DriverCgo}

// drivers runs fn once per SQLite driver.
func drivers(t *testing.T, fn func(t *testing.T, driver string)) {
	for _, driver := range sqliteDrivers {
		t.Run(driver, func(t *testing.T) { fn(t, driver) })
	}
}

// backends runs fn against a fresh SQLite store (with each driver) and a
// fresh PostgreSQL database.
func backends(t *testing.T, fn func(t *testing.T, db *DB)) {
	for _, driver := range sqliteDrivers {
		t.Run(driver, func(t *testing.T) {
			db, _ := openTestDriver(t, driver)
			fn(t, db)
		})
	}
	t.Run("postgres", func(t *testing.T) {
		dsn, err := pg.NewDatabase()
		if err != nil {
			t.Fatal(err)
		}
		db, err := OpenPostgres(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		fn(t, db)
	})
}

func openTest(t testing.TB) (*DB, string) {
	t.Helper()
	return openTestDriver(t, SQLiteDriver)
}

func openTestDriver(t testing.TB, driver string) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keyrack.db")
	db, err := openSQLite(context.Background(), path, driver)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

func TestMigrations(t *testing.T) { drivers(t, testMigrations) }

func testMigrations(t *testing.T, driver string) {
	ctx := context.Background()
	db, path := openTestDriver(t, driver)
	v, err := db.SchemaVersion(ctx)
	if err != nil || v != len(sqliteDialect.migrations) {
		t.Fatalf("version %d, %v", v, err)
	}
	db.Close()
	// Reopening applies nothing twice.
	db2, err := openSQLite(ctx, path, driver)
	if err != nil {
		t.Fatal(err)
	}
	// A store from a newer keyrackd is refused.
	if _, err := db2.db.Exec(`INSERT INTO schema_migrations (version, applied_us) VALUES (999, 0)`); err != nil {
		t.Fatal(err)
	}
	db2.Close()
	if _, err := openSQLite(ctx, path, driver); err == nil {
		t.Fatal("opened a store with a newer schema")
	}
}

func TestKeysLifecycle(t *testing.T) { backends(t, testKeysLifecycle) }

func testKeysLifecycle(t *testing.T, db *DB) {
	ctx := context.Background()
	k := Key{Name: "brand-serial", CKAID: []byte{1, 2}, Origin: "generated", Roles: `[]`, State: KeyPending, ProposalID: "p1"}
	err := db.Update(ctx, func(tx *Tx) error { return tx.InsertKey(k) })
	if err != nil {
		t.Fatal(err)
	}
	for name, dup := range map[string]Key{
		"same name":   {Name: "brand-serial", CKAID: []byte{9}, Origin: "x", Roles: "[]", State: KeyPending},
		"same CKA_ID": {Name: "other", CKAID: []byte{1, 2}, Origin: "x", Roles: "[]", State: KeyPending},
	} {
		if err := db.Update(ctx, func(tx *Tx) error { return tx.InsertKey(dup) }); !errors.Is(err, ErrExists) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := db.Update(ctx, func(tx *Tx) error { return tx.ActivateKey("brand-serial", "kid", []byte("der"), 4096) }); err != nil {
		t.Fatal(err)
	}
	// Activating twice is a conflict, not a silent success.
	if err := db.Update(ctx, func(tx *Tx) error { return tx.ActivateKey("brand-serial", "kid", []byte("der"), 4096) }); !errors.Is(err, ErrConflict) {
		t.Fatalf("second activation: %v", err)
	}
	if err := db.Update(ctx, func(tx *Tx) error { return tx.SetKeyState("brand-serial", KeyPending, KeyFailed) }); !errors.Is(err, ErrConflict) {
		t.Fatalf("wrong from-state: %v", err)
	}
	var got Key
	db.View(ctx, func(tx *Tx) error { got, err = tx.GetKeyByKeyID("kid"); return err })
	if err != nil || got.State != KeyActive || got.Bits != 4096 || string(got.PublicKey) != "der" {
		t.Fatalf("after activation: %+v %v", got, err)
	}
	db.View(ctx, func(tx *Tx) error { _, err = tx.GetKey("nope"); return err })
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing key: %v", err)
	}
}

func TestUpdateRollsBack(t *testing.T) { backends(t, testUpdateRollsBack) }

func testUpdateRollsBack(t *testing.T, db *DB) {
	ctx := context.Background()
	boom := errors.New("boom")
	err := db.Update(ctx, func(tx *Tx) error {
		if _, err := tx.InsertOfficer("alice", "ssh-ed25519 AAAA", ""); err != nil {
			return err
		}
		if _, err := tx.Audit("system", "officer.add", "alice", "ok", nil); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	db.View(ctx, func(tx *Tx) error {
		if _, err := tx.GetOfficerByName("alice"); !errors.Is(err, ErrNotFound) {
			t.Errorf("officer survived a rolled-back transaction: %v", err)
		}
		if ev, _ := tx.AuditEvents(0, 10); len(ev) != 0 {
			t.Errorf("audit event survived a rolled-back transaction")
		}
		return nil
	})
}

func TestProposalsApprovals(t *testing.T) { backends(t, testProposalsApprovals) }

func testProposalsApprovals(t *testing.T, db *DB) {
	ctx := context.Background()
	p := Proposal{ID: "p1", Kind: "key.generate", Payload: `{}`, Summary: "generate", Proposer: "alice", ExpiresAt: time.Now().Add(time.Hour)}
	err := db.Update(ctx, func(tx *Tx) error {
		if err := tx.InsertProposal(p); err != nil {
			return err
		}
		return tx.AddApproval("p1", "alice", []byte("sig-a"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(ctx, func(tx *Tx) error { return tx.AddApproval("p1", "alice", []byte("sig-a")) }); !errors.Is(err, ErrExists) {
		t.Fatalf("double approval: %v", err)
	}
	db.Update(ctx, func(tx *Tx) error { return tx.AddApproval("p1", "bob", []byte("sig-b")) })
	var got Proposal
	db.View(ctx, func(tx *Tx) error { got, err = tx.GetProposal("p1"); return err })
	if err != nil || len(got.Approvals) != 2 || got.State != ProposalPending {
		t.Fatalf("%+v %v", got, err)
	}
	// Each approval keeps its signature.
	if a := got.Approvals; a[0].Officer != "alice" || string(a[0].Signature) != "sig-a" || a[1].Officer != "bob" || string(a[1].Signature) != "sig-b" {
		t.Fatalf("approvals %+v", a)
	}
	if err := db.Update(ctx, func(tx *Tx) error { return tx.DecideProposal("p1", ProposalExecuted, "done") }); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(ctx, func(tx *Tx) error { return tx.DecideProposal("p1", ProposalFailed, "x") }); !errors.Is(err, ErrConflict) {
		t.Fatalf("deciding twice: %v", err)
	}
	var pend []Proposal
	db.View(ctx, func(tx *Tx) error { pend, err = tx.ListProposals(ProposalPending, 0); return err })
	if len(pend) != 0 {
		t.Fatalf("pending after decision: %v", pend)
	}
}

func TestAuditChain(t *testing.T) { backends(t, testAuditChain) }

func testAuditChain(t *testing.T, db *DB) {
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		err := db.Update(ctx, func(tx *Tx) error {
			_, err := tx.Audit("officer:alice", "key.generate", "k", "ok", map[string]any{"i": i})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	n, err := db.VerifyAudit(ctx)
	if err != nil || n != 5 {
		t.Fatalf("verify: %d %v", n, err)
	}
	// Alter event 3's result on disk.
	db.db.Exec(`UPDATE audit SET result = 'refused' WHERE seq = 3`)
	n, err = db.VerifyAudit(ctx)
	var ce *ChainError
	if !errors.As(err, &ce) || ce.Seq != 3 || n != 2 {
		t.Fatalf("altered event: verified %d, %v", n, err)
	}
	db.db.Exec(`UPDATE audit SET result = 'ok' WHERE seq = 3`)
	if _, err := db.VerifyAudit(ctx); err != nil {
		t.Fatalf("restored: %v", err)
	}
	// Re-hash event 3 after altering it: event 4's link breaks instead.
	var e3 AuditEvent
	evs, _ := func() ([]AuditEvent, error) {
		var out []AuditEvent
		err := db.View(ctx, func(tx *Tx) error { var err error; out, err = tx.AuditEvents(2, 1); return err })
		return out, err
	}()
	e3 = evs[0]
	e3.Actor = "officer:mallory"
	db.db.Exec(`UPDATE audit SET actor = $1, hash = $2 WHERE seq = 3`, e3.Actor, chainHash(e3.PrevHash, e3))
	_, err = db.VerifyAudit(ctx)
	if !errors.As(err, &ce) || ce.Seq != 4 {
		t.Fatalf("re-hashed event: %v", err)
	}
	// A deleted event is named too.
	db.db.Exec(`DELETE FROM audit WHERE seq = 4`)
	_, err = db.VerifyAudit(ctx)
	if !errors.As(err, &ce) || ce.Seq != 3 && ce.Seq != 4 {
		t.Fatalf("deleted event: %v", err)
	}
}

// TestGroupCommit runs many concurrent Updates, some failing: each failed
// one leaves nothing, every other one is kept, and the audit chain they
// wrote in shared transactions verifies.
func TestGroupCommit(t *testing.T) { backends(t, testGroupCommit) }

func TestReadOnlyRefusesWrites(t *testing.T) { drivers(t, testReadOnlyRefusesWrites) }

func testReadOnlyRefusesWrites(t *testing.T, driver string) {
	ctx := context.Background()
	db, path := openTestDriver(t, driver)
	db.Close()
	ro, err := openSQLiteReadOnly(ctx, path, driver)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := ro.Update(ctx, func(*Tx) error { return nil }); err == nil {
		t.Fatal("read-only store accepted an update")
	}
}

func testGroupCommit(t *testing.T, db *DB) {
	ctx := context.Background()
	const n = 200
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs <- db.Update(ctx, func(tx *Tx) error {
				if _, err := tx.InsertOfficer(fmt.Sprintf("o%d", i), fmt.Sprintf("ssh-ed25519 K%d", i), ""); err != nil {
					return err
				}
				if _, err := tx.Audit("system", "test", fmt.Sprint(i), "ok", nil); err != nil {
					return err
				}
				if i%5 == 0 {
					return errors.New("refused")
				}
				return nil
			})
		}(i)
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
		}
	}
	if failed != n/5 {
		t.Fatalf("%d updates failed, want %d", failed, n/5)
	}
	var officers []Officer
	db.View(ctx, func(tx *Tx) error { officers, _ = tx.ListOfficers(); return nil })
	if len(officers) != n-n/5 {
		t.Fatalf("%d officers kept, want %d", len(officers), n-n/5)
	}
	for _, o := range officers {
		var i int
		fmt.Sscanf(o.Name, "o%d", &i)
		if i%5 == 0 {
			t.Fatalf("officer %s of a failed update was kept", o.Name)
		}
	}
	if c, err := db.VerifyAudit(ctx); err != nil || c != int64(n-n/5) {
		t.Fatalf("audit: %d events, %v", c, err)
	}
	if db.AuditWrites() != uint64(n-n/5) {
		t.Fatalf("audit writes counted %d", db.AuditWrites())
	}
}

// TestTwoAppliancesOnePostgres writes concurrently through two store
// handles on one database, as two appliances would: every write lands,
// serial reservations decide exactly one winner, and the audit chain they
// build together verifies.
func TestTwoAppliancesOnePostgres(t *testing.T) {
	ctx := context.Background()
	dsn, err := pg.NewDatabase()
	if err != nil {
		t.Fatal(err)
	}
	var dbs [2]*DB
	for i := range dbs {
		if dbs[i], err = OpenPostgres(ctx, dsn); err != nil {
			t.Fatal(err)
		}
		defer dbs[i].Close()
	}
	const n = 100
	var wg sync.WaitGroup
	var won sync.Map
	for i := 0; i < 2*n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			err := dbs[i%2].Update(ctx, func(tx *Tx) error {
				if _, err := tx.InsertOfficer(fmt.Sprintf("o%d", i), fmt.Sprintf("ssh-ed25519 K%d", i), ""); err != nil {
					return err
				}
				// Everyone wants serial S-<i/10>: one reservation each wins.
				r := SerialRecord{Brand: "b", Model: "m", Serial: fmt.Sprintf("S-%d", i/10), DeviceKeyID: fmt.Sprint(i), Client: "c", Nonce: fmt.Sprint(i)}
				if err := tx.ReserveSerial(r); err == nil {
					won.Store(r.Serial, true)
				} else if !errors.Is(err, ErrExists) {
					return err
				}
				_, err := tx.Audit("system", "test", fmt.Sprint(i), "ok", nil)
				return err
			})
			if err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	var officers []Officer
	dbs[0].View(ctx, func(tx *Tx) error { officers, _ = tx.ListOfficers(); return nil })
	if len(officers) != 2*n {
		t.Fatalf("%d officers, want %d", len(officers), 2*n)
	}
	reserved := 0
	won.Range(func(_, _ any) bool { reserved++; return true })
	var rows int
	dbs[1].db.QueryRow(`SELECT count(*) FROM serials`).Scan(&rows)
	if reserved != 2*n/10 || rows != reserved {
		t.Fatalf("%d serials won, %d rows, want %d", reserved, rows, 2*n/10)
	}
	if c, err := dbs[1].VerifyAudit(ctx); err != nil || c != 2*n {
		t.Fatalf("audit chain from two writers: %d events, %v", c, err)
	}
}

func TestUnsynced(t *testing.T) { backends(t, testUnsynced) }

// testUnsynced: an unsynced update is committed when it returns (seen by
// readers and by later updates), rolls back whole on error, and mixes in
// one group commit with durable ones.
func testUnsynced(t *testing.T, db *DB) {
	ctx := context.Background()
	if err := db.UpdateUnsynced(ctx, func(tx *Tx) error { return tx.SetSetting("a", "1") }); err != nil {
		t.Fatal(err)
	}
	db.View(ctx, func(tx *Tx) error {
		if v, err := tx.Setting("a"); err != nil || v != "1" {
			t.Errorf("unsynced write not visible to a reader: %q, %v", v, err)
		}
		return nil
	})
	boom := errors.New("boom")
	err := db.UpdateUnsynced(ctx, func(tx *Tx) error {
		if err := tx.SetSetting("b", "1"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("k%d", i)
			fn := func(tx *Tx) error { return tx.SetSetting(name, "v") }
			if i%2 == 0 {
				errs <- db.Update(ctx, fn)
			} else {
				errs <- db.UpdateUnsynced(ctx, fn)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	db.View(ctx, func(tx *Tx) error {
		if _, err := tx.Setting("b"); !errors.Is(err, ErrNotFound) {
			t.Errorf("a failed unsynced update left its write: %v", err)
		}
		for i := 0; i < 40; i++ {
			if _, err := tx.Setting(fmt.Sprintf("k%d", i)); err != nil {
				t.Errorf("k%d: %v", i, err)
			}
		}
		return nil
	})
}

// TestSQLiteLogSync: the writer commits with synchronous=NORMAL and a
// durable Update returns only after a sync of the write-ahead log that
// began after its commit; a sync in progress holds back no commit behind
// it; Synced waits for one; a failed sync fails its Updates and every
// write after it; and the store reopened after Close has everything.
func TestSQLiteLogSync(t *testing.T) { drivers(t, testSQLiteLogSync) }

func testSQLiteLogSync(t *testing.T, driver string) {
	ctx := context.Background()
	db, path := openTestDriver(t, driver)
	if err := db.Update(ctx, func(tx *Tx) error { return tx.SetSetting("durable", "1") }); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.wconn.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&n); err != nil || n != 1 {
		t.Errorf("the writer's PRAGMA synchronous = %d (%v), want 1 (NORMAL)", n, err)
	}
	if db.LogSyncs() == 0 {
		t.Error("a durable update returned without a log sync")
	}
	s0 := db.LogSyncs()
	if err := db.UpdateUnsynced(ctx, func(tx *Tx) error { return tx.SetSetting("lazy", "1") }); err != nil {
		t.Fatal(err)
	}
	if db.LogSyncs() != s0 {
		t.Error("an unsynced update synced the log")
	}

	// Hold the next sync.
	real := db.syncLog
	entered, release := make(chan struct{}, 4), make(chan error)
	db.syncLog = func() error {
		entered <- struct{}{}
		if err := <-release; err != nil {
			return err
		}
		return real()
	}
	update := func(name string, durable bool) chan error {
		done := make(chan error, 1)
		go func() {
			fn := func(tx *Tx) error { return tx.SetSetting(name, "1") }
			if durable {
				done <- db.Update(ctx, fn)
			} else {
				done <- db.UpdateUnsynced(ctx, fn)
			}
		}()
		return done
	}
	a := update("a", true)
	<-entered // a is committed; its sync has begun
	if err := <-update("b", false); err != nil {
		t.Fatalf("an unsynced update behind a sync in progress: %v", err)
	}
	c := update("c", true)
	// c commits while a's sync is held, and waits for a sync of its own.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var v string
		db.View(ctx, func(tx *Tx) error { v, _ = tx.Setting("c"); return nil })
		if v == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a durable update was not committed while an earlier sync was in progress")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case err := <-a:
		t.Fatalf("a durable update returned (%v) before its sync ended", err)
	case err := <-c:
		t.Fatalf("a durable update returned (%v) before its sync began", err)
	default:
	}
	release <- nil
	if err := <-a; err != nil {
		t.Fatal(err)
	}
	<-entered // c's sync: it began after a's ended
	release <- nil
	if err := <-c; err != nil {
		t.Fatal(err)
	}
	// Synced waits for a sync too.
	if err := <-update("f", false); err != nil {
		t.Fatal(err)
	}
	synced := make(chan error, 1)
	go func() { synced <- db.Synced(ctx) }()
	<-entered
	select {
	case err := <-synced:
		t.Fatalf("Synced returned (%v) before the sync ended", err)
	default:
	}
	release <- nil
	if err := <-synced; err != nil {
		t.Fatal(err)
	}

	// A failed sync.
	d := update("d", true)
	<-entered
	release <- errors.New("EIO")
	if err := <-d; !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "EIO") {
		t.Fatalf("a durable update whose sync failed: %v", err)
	}
	for _, durable := range []bool{true, false} {
		if err := <-update("e", durable); !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "refusing writes") {
			t.Fatalf("a write after a failed sync (durable %v): %v", durable, err)
		}
	}
	db.syncLog = real

	db.Close()
	re, err := openSQLite(ctx, path, driver)
	if err != nil {
		t.Fatal(err)
	}
	defer re.Close()
	re.View(ctx, func(tx *Tx) error {
		for _, k := range []string{"durable", "lazy", "a", "b", "c", "f"} {
			if _, err := tx.Setting(k); err != nil {
				t.Errorf("%s after reopening: %v", k, err)
			}
		}
		return nil
	})
}

func TestObserver(t *testing.T) { backends(t, testObserver) }

// testObserver: every committed update is reported once, with its
// durability and a duration no shorter than fn took; a failed one is
// not reported.
func testObserver(t *testing.T, db *DB) {
	ctx := context.Background()
	type report struct {
		durable bool
		d       time.Duration
	}
	var mu sync.Mutex
	var got []report
	db.SetObserver(Observer{Update: func(durable bool, d time.Duration) {
		mu.Lock()
		got = append(got, report{durable, d})
		mu.Unlock()
	}})
	defer db.SetObserver(Observer{})
	if err := db.Update(ctx, func(tx *Tx) error {
		time.Sleep(3 * time.Millisecond)
		return tx.SetSetting("obs-a", "1")
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.UpdateUnsynced(ctx, func(tx *Tx) error { return tx.SetSetting("obs-b", "1") }); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(ctx, func(tx *Tx) error { return errors.New("boom") }); err == nil {
		t.Fatal("failing update succeeded")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || !got[0].durable || got[1].durable || got[0].d < 3*time.Millisecond || got[1].d <= 0 {
		t.Fatalf("reports %+v, want one durable of at least 3ms, then one unsynced", got)
	}
}

func TestNonces(t *testing.T) { backends(t, testNonces) }

// testNonces: the store is the set of used request-ids (the appliance
// checks their MAC and expiry first). A request-id is claimed once
// whatever the client; a refused claim changes nothing; the purge drops
// consumed ones past their expiry and claimed ones an hour later (a
// signature in flight may still consume one).
func testNonces(t *testing.T, db *DB) {
	ctx := context.Background()
	now := time.Now()
	claim := func(id, client string, expires time.Time) error {
		return db.Update(ctx, func(tx *Tx) error { return tx.ClaimNonce(id, client, expires) })
	}
	for _, c := range []struct {
		id, client string
		expires    time.Time
		want       error
	}{
		{"fresh", "factory", now.Add(time.Hour), nil},
		{"fresh", "factory", now.Add(time.Hour), ErrNonceUsed},
		{"fresh", "line-2", now.Add(time.Hour), ErrNonceUsed},
		{"old", "factory", now.Add(-time.Minute), nil},
		{"stale", "factory", now.Add(-2 * time.Hour), nil},
		{"done", "factory", now.Add(-time.Minute), nil},
	} {
		if err := claim(c.id, c.client, c.expires); !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Errorf("claiming %s as %s: %v, want %v", c.id, c.client, err, c.want)
		}
	}
	for _, id := range []string{"fresh", "done"} {
		if err := db.Update(ctx, func(tx *Tx) error { return tx.ConsumeNonce(id) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := claim("fresh", "factory", now.Add(time.Hour)); !errors.Is(err, ErrNonceUsed) {
		t.Errorf("claiming a consumed request-id: %v", err)
	}
	if err := db.Update(ctx, func(tx *Tx) error { return tx.ConsumeNonce("fresh") }); err == nil {
		t.Error("consumed a request-id twice")
	}
	states := func() string {
		var out []string
		db.View(ctx, func(tx *Tx) error {
			rows, err := tx.query(`SELECT id || ':' || state FROM nonces ORDER BY id`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			for rows.Next() {
				var s string
				rows.Scan(&s)
				out = append(out, s)
			}
			return rows.Err()
		})
		return strings.Join(out, " ")
	}
	if got, want := states(), "done:consumed fresh:consumed old:claimed stale:claimed"; got != want {
		t.Errorf("nonces %q, want %q", got, want)
	}
	var purged int64
	if err := db.Update(ctx, func(tx *Tx) (err error) { purged, err = tx.PurgeNonces(now); return err }); err != nil {
		t.Fatal(err)
	}
	if got, want := states(), "fresh:consumed old:claimed"; got != want || purged != 2 {
		t.Errorf("after the purge: nonces %q (%d purged), want %q (2 purged)", got, purged, want)
	}
}

// TestViewDurable: ViewDurable returns what it read only once that is
// durable. fn reads a durable update that has committed and whose log sync
// is held (as when a signature's record commits while an officer reads);
// ViewDurable must wait for that sync, and for one after its read. A sync
// before the read, and none after, would return the record unsynced.
func TestViewDurable(t *testing.T) { drivers(t, testViewDurable) }

func testViewDurable(t *testing.T, driver string) {
	ctx := context.Background()
	db, _ := openTestDriver(t, driver)
	real := db.syncLog
	hold := make(chan struct{})
	var held atomic.Bool
	var letGo sync.Once
	release := func() {
		held.Store(false)
		letGo.Do(func() { close(hold) })
	}
	// Runs before openTest's Close, which would wait for a held sync.
	t.Cleanup(release)
	entered := make(chan struct{}, 8)
	db.syncLog = func() error {
		if held.Load() {
			entered <- struct{}{}
			<-hold
		}
		return real()
	}
	read, done := make(chan string, 1), make(chan error, 1)
	updated := make(chan error, 1)
	go func() {
		done <- db.ViewDurable(ctx, func(tx *Tx) error {
			// While fn runs, a durable update commits and its sync is held;
			// fn's first read comes after that commit.
			held.Store(true)
			go func() { updated <- db.Update(ctx, func(tx *Tx) error { return tx.SetSetting("record", "1") }) }()
			select {
			case <-entered:
			case <-time.After(10 * time.Second):
				return errors.New("the durable update's sync did not start")
			}
			v, err := tx.Setting("record")
			read <- v
			return err
		})
	}()
	select {
	case v := <-read:
		if v != "1" {
			t.Fatalf("fn read %q; the test needs it to see the committed, unsynced record", v)
		}
	case err := <-done:
		t.Fatalf("ViewDurable returned before fn read: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("fn did not read")
	}
	select {
	case err := <-done:
		t.Fatalf("ViewDurable returned (%v) while the log sync of what it read was held", err)
	case <-time.After(200 * time.Millisecond):
	}
	release()
	for what, ch := range map[string]chan error{"ViewDurable": done, "the durable update": updated} {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not return after the sync was let go", what)
		}
	}
}

// TestDeviceSerialsBackfill: migration 4 binds the serials an older
// appliance assigned to their device keys, so that a device registered
// before the upgrade gets its serial back after it. A key that was given
// several (the old behaviour) is bound to the one issued last; serials
// from requests, and reservations never issued, are not bound.
func TestDeviceSerialsBackfill(t *testing.T) { drivers(t, testDeviceSerialsBackfill) }

func testDeviceSerialsBackfill(t *testing.T, driver string) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keyrack.db")
	raw, err := sql.Open(driver, "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := raw.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_us BIGINT NOT NULL)`)
	for v := 1; v <= 3; v++ {
		exec(sqliteDialect.migrations[v-1])
		exec(`INSERT INTO schema_migrations (version, applied_us) VALUES ($1, 0)`, v)
	}
	for _, m := range []struct{ model, source string }{{"assigned", "assign"}, {"requested", "request"}} {
		exec(`INSERT INTO models (brand, model, keys, serial_source, serial_prefix, next_serial, allow_rekey, proposal_id, created_us, updated_us)
			VALUES ('b', $1, '{}', $2, '', 1, 0, 'p', 0, 0)`, m.model, m.source)
	}
	for _, s := range []struct {
		model, serial, key, state string
		updated                   int64
	}{
		{"assigned", "1", "k1", "issued", 10},
		{"assigned", "2", "k1", "issued", 30}, // k1 again, later: bound
		{"assigned", "3", "k1", "issued", 20},
		{"assigned", "4", "k2", "issued", 10},
		{"assigned", "5", "k3", "signing", 10},
		{"requested", "R", "k1", "issued", 10},
	} {
		exec(`INSERT INTO serials (brand, model, serial, device_key_id, revision, state, client, nonce, updated_us)
			VALUES ('b', $1, $2, $3, 0, $4, 'c', 'n', $5)`, s.model, s.serial, s.key, s.state, s.updated)
	}
	raw.Close()

	db, err := openSQLite(ctx, path, driver)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got := map[string]string{}
	err = db.View(ctx, func(tx *Tx) error {
		for _, q := range []struct{ model, key string }{{"assigned", "k1"}, {"assigned", "k2"}, {"assigned", "k3"}, {"requested", "k1"}} {
			s, err := tx.DeviceSerial("b", q.model, q.key)
			if errors.Is(err, ErrNotFound) {
				s = "-"
			} else if err != nil {
				return err
			}
			got[q.model+"/"+q.key] = s
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"assigned/k1": "2", "assigned/k2": "4", "assigned/k3": "-", "requested/k1": "-"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("bindings after the migration %v, want %v", got, want)
	}
}
