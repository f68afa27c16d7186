// Package store is the appliance's durable state: key records, officers,
// ceremony proposals, API clients and the audit log.
//
// Every state change runs in a transaction together with the audit event
// that records it, so an action is never durable without its audit event
// nor the reverse. SQL statements use $N placeholders and portable types so
// that the same statements run on SQLite (embedded default) and PostgreSQL;
// only the schema differs per dialect.
//
// It imports nothing of keyrack's: the core (package appliance) decides, the
// store records. The API (package httpapi) never reaches it directly.
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
	"time"

	_ "modernc.org/sqlite" // the embedded default store (see SQLiteDriver)
)

// Sentinel errors, mapped to HTTP answers by the appliance.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrConflict = errors.New("state changed concurrently")
	// ErrFailed: the store cannot make writes durable any more (a sync of
	// SQLite's write-ahead log failed, and the kernel may have dropped the
	// pages) and refuses every write until the daemon is restarted.
	ErrFailed = errors.New("store failed")
)

// DB is an open store.
type DB struct {
	// db serves readers (View, backups). On SQLite the writer has a pool
	// of its own, wdb, whose transactions begin IMMEDIATE: the cgo driver
	// begins every transaction of a pool the same way, and a read
	// transaction that took the write lock would wait for the writer.
	db      *sql.DB
	wdb     *sql.DB
	dialect dialect
	audits  atomic.Uint64 // audit events committed
	commits atomic.Uint64 // write transactions committed
	views   atomic.Uint64 // read transactions begun
	// config counts committed transactions that changed keys, models or
	// API clients (see ConfigGeneration).
	config atomic.Uint64

	// stmts holds prepared statements by query text (see Tx.exec); nil
	// for drivers that cache prepared statements themselves (pgx).
	stmts *stmtCache
	// wstmts is the writer's statement cache, on wdb (nil: stmts).
	wstmts *stmtCache

	// wconn is the writer's own connection (SQLite). It stays open, so
	// SQLite keeps the -wal file the syncer syncs.
	wconn *sql.Conn

	observer atomic.Pointer[Observer]

	// auditSignal wakes the one who checkpoints the chain (see
	// AuditSignal).
	auditSignal atomic.Pointer[auditSignal]

	// writes feeds the group-commit writer (see Update).
	writes    chan *writeOp
	closeOnce sync.Once
	writerOut chan struct{}

	// SQLite stores make their write-ahead log durable themselves, off the
	// writer's path (see Update): syncLog syncs it (an fsync of the -wal
	// file; a seam for tests), awaiting holds the durable Updates of each
	// committed batch for the syncer goroutine, and failed is set for
	// good when a sync fails.
	syncLog  func() error
	walFile  *os.File
	walPath  string
	awaiting chan []*writeOp
	synced   atomic.Uint64 // log syncs done
	failed   atomic.Pointer[error]
}

// writeOp is one caller's Update waiting for the writer.
type writeOp struct {
	ctx  context.Context
	fn   func(*Tx) error
	sync bool // durable before Update returns (see UpdateUnsynced)
	done chan error
}

// Observer receives what the store measures, for metrics. Its functions
// run on the caller's goroutine: they must be cheap.
type Observer struct {
	// Update is called when an Update (durable) or UpdateUnsynced returns
	// with what fn wrote committed, with the time from the call, waiting
	// for the writer included (with a software token signing on every
	// core, that wait for the writer to get a core is most of it).
	Update func(durable bool, d time.Duration)
}

// SetObserver installs o.
func (d *DB) SetObserver(o Observer) { d.observer.Store(&o) }

// maxBatch bounds how many Updates share one commit.
const maxBatch = 128

// ConfigGeneration changes whenever this process commits a change to a
// key, a model or an API client, before the Update that made it returns.
// Callers caching such records read it before reading the records and
// drop what they cached under an older generation. Changes committed by
// another process sharing the store (see Shared) do not move it.
func (d *DB) ConfigGeneration() uint64 { return d.config.Load() }

// Shared reports whether other appliances may write the store
// (PostgreSQL) rather than this process alone (embedded SQLite).
func (d *DB) Shared() bool { return d.dialect.name == "postgres" }

// Commits returns how many write transactions (group commits) this
// process committed.
func (d *DB) Commits() uint64 { return d.commits.Load() }

// Views returns how many read transactions (View) this process began.
func (d *DB) Views() uint64 { return d.views.Load() }

// AuditWrites returns how many audit events this process committed.
func (d *DB) AuditWrites() uint64 { return d.audits.Load() }

type dialect struct {
	name       string
	migrations []string
	// writeLock, when set, runs first in every write batch: it serializes
	// writers of several processes sharing one database.
	writeLock string
	// unsynced, when set, runs first in a write batch none of whose
	// Updates must be durable at commit (see UpdateUnsynced).
	unsynced string
}

// The SQLite drivers the store can open its file with, by their
// database/sql names. Only SQLiteDriver is linked into the programs; the
// store's tests link both (see BenchmarkSerialWrites).
const (
	// DriverCgo is github.com/mattn/go-sqlite3: SQLite's C, built with cgo.
	DriverCgo = "sqlite3"
	// DriverPure is modernc.org/sqlite: SQLite translated to Go.
	DriverPure = "sqlite"
)

// SQLiteDriver is the driver OpenSQLite and OpenSQLiteReadOnly use, and
// the one anything else opening the store's file in this process must
// use: two copies of SQLite in one process do not see each other's POSIX
// locks, and closing a file in one drops the other's.
//
// modernc's, because the cgo driver is not measurably faster (issue 20;
// 2 shared cores, both drivers in the same runs). BenchmarkSerialWrites,
// 10 runs each, CPU-µs per serial (mean ± standard error): 326±5 (pure)
// and 326±5 (cgo) from 1 writer, 235±8 and 217±9 from 4. keyrack-bench,
// 3 runs each, alternated: appliance_cpu_ms_per_serial 1.68/1.67/1.65
// (pure) and 1.56/1.66/1.67 (cgo); serials/s at concurrency 8
// 311/311/310 and 299/311/311; ratio 0.736/0.748/0.746 and
// 0.750/0.741/0.749. A serial's store CPU is mostly system calls (the WAL's
// writes, our fsync), the same in either; what SQLite computes is about
// a fifth of it, so even a driver twice as fast saves ~30 µs of the
// ~1.6 ms the daemon spends per serial. The cgo driver passes every test
// (store, httpapi, crash, snapd) but costs a cold build 14 s more (57 s
// against 42 s for keyrackd) to compile SQLite's C. To switch: this
// constant and the import above (see sqlite_test.go).
const SQLiteDriver = DriverPure

// sqliteDSN is the data source name that opens path with driver as the
// store needs it: WAL, a 10 s busy timeout, foreign keys, commits that do
// not wait for the disk (the store syncs the log itself: see Update), and,
// for the writer, transactions that take the write lock when they begin
// (so that a wait for another process's lock is under the busy timeout
// rather than a failure halfway through). readOnly opens for reading only,
// changing nothing in the file.
func sqliteDSN(driver, path string, writer, readOnly bool) (string, error) {
	var q []string
	switch driver {
	case DriverPure:
		q = []string{"_pragma=busy_timeout(10000)"}
		if !readOnly {
			q = append(q, "_pragma=journal_mode(WAL)", "_pragma=foreign_keys(1)", "_pragma=synchronous(NORMAL)")
		}
	case DriverCgo:
		q = []string{"_busy_timeout=10000"}
		if !readOnly {
			q = append(q, "_journal_mode=WAL", "_foreign_keys=1", "_synchronous=NORMAL")
		}
	default:
		return "", fmt.Errorf("store: unknown SQLite driver %q", driver)
	}
	switch {
	case readOnly:
		q = append(q, "mode=ro")
	case writer:
		q = append(q, "_txlock=immediate")
	}
	return "file:" + path + "?" + strings.Join(q, "&"), nil
}

// OpenSQLite opens (creating if needed) the SQLite store at path and
// brings its schema up to date. An Update's writes are durable when it
// returns (the store syncs the write-ahead log itself: see Update).
func OpenSQLite(ctx context.Context, path string) (*DB, error) {
	return openSQLite(ctx, path, SQLiteDriver)
}

func openSQLite(ctx context.Context, path, driver string) (*DB, error) {
	open := func(writer bool) (*sql.DB, error) {
		dsn, err := sqliteDSN(driver, path, writer, false)
		if err != nil {
			return nil, err
		}
		sdb, err := sql.Open(driver, dsn)
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		return sdb, nil
	}
	wdb, err := open(true)
	if err != nil {
		return nil, err
	}
	// All writes go through the one writer goroutine on its own
	// connection (wconn; migrations run before it starts). The second
	// is where the writer's statement cache prepares what Tx.Stmt then
	// prepares again on wconn: a cache preparing on wconn's pool with
	// wconn taken would wait for ever.
	wdb.SetMaxOpenConns(2)
	d := &DB{wdb: wdb, dialect: sqliteDialect, wstmts: newStmtCache(wdb)}
	fail := func(err error) (*DB, error) {
		if d.wconn != nil {
			d.wconn.Close()
		}
		if d.db != nil {
			d.db.Close()
		}
		wdb.Close()
		return nil, err
	}
	if err := d.migrate(ctx); err != nil {
		return fail(err)
	}
	if d.wconn, err = wdb.Conn(ctx); err != nil {
		return fail(fmt.Errorf("store: %w", err))
	}
	// The writer's connection stays open, so SQLite keeps the -wal file
	// (it deletes it when the last connection closes).
	var mode string
	if err := d.wconn.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		return fail(fmt.Errorf("store: journal mode %q, want wal: %v", mode, err))
	}
	// Readers run in parallel under WAL.
	if d.db, err = open(false); err != nil {
		return fail(err)
	}
	d.db.SetMaxOpenConns(16)
	d.stmts = newStmtCache(d.db)
	d.walPath = path + "-wal"
	if d.walFile, err = openWAL(d.walPath); err != nil {
		return fail(fmt.Errorf("store: %w", err))
	}
	d.syncLog = d.syncWAL
	d.startWriter()
	return d, nil
}

// OpenSQLiteReadOnly opens an existing SQLite store for reading only (an
// auditor's copy, a running appliance's file): nothing is migrated or
// written.
func OpenSQLiteReadOnly(ctx context.Context, path string) (*DB, error) {
	return openSQLiteReadOnly(ctx, path, SQLiteDriver)
}

func openSQLiteReadOnly(ctx context.Context, path, driver string) (*DB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	dsn, err := sqliteDSN(driver, path, false, true)
	if err != nil {
		return nil, err
	}
	sdb, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	d := &DB{db: sdb, dialect: sqliteDialect, stmts: newStmtCache(sdb)}
	v, err := d.SchemaVersion(ctx)
	if err != nil {
		sdb.Close()
		return nil, fmt.Errorf("store: %s is not a keyrack store: %w", path, err)
	}
	if v > len(d.dialect.migrations) {
		sdb.Close()
		return nil, fmt.Errorf("store: schema version %d is newer than this program (%d)", v, len(d.dialect.migrations))
	}
	return d, nil
}

// Close stops the writer (after the writes already queued) and closes the
// store.
func (d *DB) Close() error {
	d.closeOnce.Do(func() {
		if d.writes != nil {
			close(d.writes)
			<-d.writerOut
		}
		if d.wconn != nil {
			d.wconn.Close()
		}
		if d.walFile != nil {
			d.walFile.Close()
		}
		d.stmts.close()
		d.wstmts.close()
	})
	if d.wdb != nil {
		d.wdb.Close()
	}
	return d.db.Close()
}

// Ping checks the store answers.
func (d *DB) Ping(ctx context.Context) error { return d.db.PingContext(ctx) }

// migrate applies the dialect's migrations that are not yet applied, each
// in its own transaction. The version is the migration's index + 1.
func (d *DB) migrate(ctx context.Context) error {
	db := d.db
	if d.wdb != nil {
		db = d.wdb
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_us BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("store: creating schema_migrations: %w", err)
	}
	var have int
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
		return fmt.Errorf("store: reading schema version: %w", err)
	}
	if have > len(d.dialect.migrations) {
		return fmt.Errorf("store: schema version %d is newer than this keyrackd (%d): refusing to run an old binary on a newer store", have, len(d.dialect.migrations))
	}
	for v := have + 1; v <= len(d.dialect.migrations); v++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("store: migration %d: %w", v, err)
		}
		if _, err := tx.ExecContext(ctx, d.dialect.migrations[v-1]); err != nil {
			tx.Rollback()
			return fmt.Errorf("store: migration %d: %w", v, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_us) VALUES ($1, $2)`, v, micros(time.Now())); err != nil {
			tx.Rollback()
			return fmt.Errorf("store: migration %d: %w", v, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("store: migration %d: %w", v, err)
		}
	}
	return nil
}

// SchemaVersion returns the applied schema version.
func (d *DB) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := d.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}

// Tx is one store transaction. Its methods are the store's operations.
type Tx struct {
	tx            *sql.Tx
	stmts         *stmtCache
	now           time.Time
	audits        int
	officerAudits int  // audit events by an officer: actor
	config        bool // changed keys, models or clients
}

// Now is the transaction's clock: every row and audit event written in it
// carries the same time.
func (t *Tx) Now() time.Time { return t.now }

// Update runs fn in a read-write transaction and returns once what fn
// wrote is durable, or fn's error with nothing it wrote kept.
//
// Updates are group-committed: one writer goroutine runs every Update
// waiting at that moment in one SQLite transaction, each in its own
// SAVEPOINT (so one Update's error rolls back only its own writes), and
// commits once. fn runs on the writer goroutine: it must only use tx,
// never call Update.
//
// On SQLite the writer commits without waiting for the disk
// (synchronous=NORMAL) and a syncer goroutine then makes the write-ahead
// log durable with fsync; an Update returns after a sync that began once
// its commit was written. The writer goes on with the next batch
// meanwhile, so a slow fsync delays the answers of durable Updates but not
// the commits behind them (an UpdateUnsynced, say, waiting to run), and
// one fsync serves every commit made before it. The price: a reader can
// see a durable Update's writes before its Update returns, and a crash in
// between loses them, as it loses an UpdateUnsynced's. Nothing may leave
// the appliance on the strength of such a read that would not also
// follow from a durable Update's own return. On PostgreSQL the commit
// waits for the server's WAL flush (synchronous_commit).
func (d *DB) Update(ctx context.Context, fn func(*Tx) error) error {
	return d.update(ctx, fn, true)
}

// UpdateUnsynced is Update without waiting for the disk: what fn wrote is
// committed (visible to every reader and writer, here and on other
// appliances sharing the store) when it returns, and becomes durable with
// the next durable commit, which makes everything before it durable too
// (SQLite's WAL and PostgreSQL's WAL are both written in commit order). A
// crash before that loses it, and nothing after it can have been kept.
//
// It is for records whose loss in a crash harms nothing because nothing
// has left the appliance on their strength yet: a request-id (the device
// asks for a new one), the reservation of a serial before signing (the
// signature is released only after a durable Update that follows it).
func (d *DB) UpdateUnsynced(ctx context.Context, fn func(*Tx) error) error {
	return d.update(ctx, fn, false)
}

func (d *DB) update(ctx context.Context, fn func(*Tx) error, sync bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d.writes == nil {
		return errors.New("store: opened read-only")
	}
	if err := d.Err(); err != nil {
		return err
	}
	start := time.Now()
	op := &writeOp{ctx: ctx, fn: fn, sync: sync, done: make(chan error, 1)}
	d.writes <- op
	// Once queued, the outcome is awaited even if ctx ends: the caller
	// must know whether its write is durable.
	err := <-op.done
	if o := d.observer.Load(); o != nil && o.Update != nil && err == nil {
		o.Update(sync, time.Since(start))
	}
	return err
}

func (d *DB) startWriter() {
	d.writes = make(chan *writeOp, 4*maxBatch)
	d.writerOut = make(chan struct{})
	var syncerOut chan struct{}
	if d.syncLog != nil {
		d.awaiting = make(chan []*writeOp, 4*maxBatch)
		syncerOut = make(chan struct{})
		go d.syncer(syncerOut)
	}
	go func() {
		defer close(d.writerOut)
		if d.awaiting != nil {
			defer func() {
				close(d.awaiting)
				<-syncerOut
			}()
		}
		batch := make([]*writeOp, 0, maxBatch)
		for op := range d.writes {
			batch = append(batch[:0], op)
		fill:
			for len(batch) < maxBatch {
				select {
				case more, ok := <-d.writes:
					if !ok {
						break fill
					}
					batch = append(batch, more)
				default:
					break fill
				}
			}
			d.commitBatch(batch)
		}
	}()
}

// commitBatch runs a batch of Updates in one transaction. Each Update of
// a batch of several runs in its own savepoint, so that its error undoes
// only its own writes; an Update alone needs none (its error rolls back
// the transaction), which saves two statements in the common case.
func (d *DB) commitBatch(batch []*writeOp) {
	fail := func(err error) {
		for _, op := range batch {
			op.done <- err
		}
	}
	unsynced := d.dialect.unsynced
	for _, op := range batch {
		if op.sync {
			unsynced = ""
			break
		}
	}
	var tx *sql.Tx
	var err error
	if d.wconn != nil {
		tx, err = d.wconn.BeginTx(context.Background(), nil)
	} else {
		tx, err = d.db.BeginTx(context.Background(), nil)
	}
	if err != nil {
		fail(fmt.Errorf("store: begin: %w", err))
		return
	}
	if unsynced != "" {
		if _, err := tx.Exec(unsynced); err != nil {
			tx.Rollback()
			fail(fmt.Errorf("store: setting commit durability: %w", err))
			return
		}
	}
	if d.dialect.writeLock != "" {
		if _, err := tx.Exec(d.dialect.writeLock); err != nil {
			tx.Rollback()
			fail(fmt.Errorf("store: write lock: %w", err))
			return
		}
	}
	stmts := d.stmts
	if d.wstmts != nil {
		stmts = d.wstmts
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	if len(batch) == 1 {
		op := batch[0]
		t := &Tx{tx: tx, stmts: stmts, now: now}
		err := op.ctx.Err()
		if err == nil {
			err = op.fn(t)
		}
		if err != nil {
			tx.Rollback()
			op.done <- err
			return
		}
		if err := tx.Commit(); err != nil {
			op.done <- fmt.Errorf("store: commit: %w", err)
			return
		}
		d.commits.Add(1)
		d.audits.Add(uint64(t.audits))
		d.signalAudits(t.audits, t.officerAudits)
		if t.config {
			d.config.Add(1)
		}
		if op.sync && d.awaiting != nil {
			d.awaiting <- []*writeOp{op}
			return
		}
		op.done <- nil
		return
	}
	results := make([]error, len(batch))
	audits, officerAudits := 0, 0
	config := false
	for i, op := range batch {
		if err := op.ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		if _, err := tx.Exec(`SAVEPOINT op`); err != nil {
			tx.Rollback()
			fail(fmt.Errorf("store: savepoint: %w", err))
			return
		}
		t := &Tx{tx: tx, stmts: stmts, now: now}
		results[i] = op.fn(t)
		if results[i] != nil {
			if _, err := tx.Exec(`ROLLBACK TO op`); err != nil {
				tx.Rollback()
				fail(fmt.Errorf("store: rollback to savepoint: %w", err))
				return
			}
		} else {
			audits += t.audits
			officerAudits += t.officerAudits
			config = config || t.config
		}
		if _, err := tx.Exec(`RELEASE op`); err != nil {
			tx.Rollback()
			fail(fmt.Errorf("store: release savepoint: %w", err))
			return
		}
	}
	if err := tx.Commit(); err != nil {
		fail(fmt.Errorf("store: commit: %w", err))
		return
	}
	d.commits.Add(1)
	d.audits.Add(uint64(audits))
	d.signalAudits(audits, officerAudits)
	if config {
		d.config.Add(1)
	}
	var durable []*writeOp
	for i, op := range batch {
		if op.sync && results[i] == nil && d.awaiting != nil {
			durable = append(durable, op)
			continue
		}
		op.done <- results[i]
	}
	if len(durable) > 0 {
		d.awaiting <- durable
	}
}

// syncer answers durable Updates once the write-ahead log holding their
// commits is synced. Each sync serves every commit handed over before it
// began: while one runs, the next batches' Updates gather for the next.
// A failed sync fails its Updates and, since the kernel may have dropped
// the pages it could not write, every Update after it (see failed).
func (d *DB) syncer(out chan struct{}) {
	defer close(out)
	var group []*writeOp
	for ops := range d.awaiting {
		group = append(group[:0], ops...)
	gather:
		for {
			select {
			case more, ok := <-d.awaiting:
				if !ok {
					break gather
				}
				group = append(group, more...)
			default:
				break gather
			}
		}
		var err error
		if e := d.failed.Load(); e != nil {
			err = *e
		} else if err = d.syncLog(); err != nil {
			err = fmt.Errorf("store: %w: syncing the write-ahead log failed, so no write is durable now; refusing writes until restarted: %w", ErrFailed, err)
			d.failed.Store(&err)
		} else {
			d.synced.Add(1)
		}
		for _, op := range group {
			op.done <- err
		}
	}
}

// Synced returns once everything committed before the call is durable. It
// says nothing of what is committed after it, which a read that follows
// may already see: readers whose results must hold for good use
// ViewDurable, which syncs after reading. On PostgreSQL a durable commit
// is visible only once flushed, and a read-only store has nothing of its
// own to sync, so it returns at once there.
func (d *DB) Synced(ctx context.Context) error {
	if d.awaiting == nil {
		return nil
	}
	return d.Update(ctx, func(*Tx) error { return nil })
}

// Err returns why the store refuses writes for good (a failed sync of
// the write-ahead log), or nil.
func (d *DB) Err() error {
	if e := d.failed.Load(); e != nil {
		return *e
	}
	return nil
}

// LogSyncs returns how many times this process synced the SQLite store's
// write-ahead log (0 for PostgreSQL).
func (d *DB) LogSyncs() uint64 { return d.synced.Load() }

// syncWAL fsyncs the SQLite store's -wal file, opened again if SQLite has
// replaced it (it does not while a connection is open; this is cheap
// insurance).
func (d *DB) syncWAL() error {
	if fi, err := os.Stat(d.walPath); err != nil {
		return err
	} else if cur, err := d.walFile.Stat(); err != nil || !os.SameFile(fi, cur) {
		f, err := openWAL(d.walPath)
		if err != nil {
			return err
		}
		d.walFile.Close()
		d.walFile = f
	}
	return d.walFile.Sync()
}

// openWAL opens the -wal file for syncing and makes its directory entry
// durable: SQLite syncs the directory of a new log with its first sync,
// and here the first sync is ours (the file may have been made when this
// process opened the store).
func openWAL(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	dir, err := os.Open(filepath.Dir(path))
	if err == nil {
		err = dir.Sync()
		dir.Close()
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("syncing the directory of %s: %w", path, err)
	}
	return f, nil
}

// ViewDurable is View for readers whose results must hold for good, such
// as an officer's copy of the audit chain or of the signing log: an event
// in such a copy that a crash then takes back would look like tampering.
// A durable Update's writes are visible while its log sync is still
// running (see Update), so the sync must come after the read, not before
// it: fn's snapshot is taken before Synced's own commit, and Synced waits
// for a sync that began after that commit.
func (d *DB) ViewDurable(ctx context.Context, fn func(*Tx) error) error {
	if err := d.View(ctx, fn); err != nil {
		return err
	}
	return d.Synced(ctx)
}

// View runs fn in a read-only transaction.
func (d *DB) View(ctx context.Context, fn func(*Tx) error) error {
	d.views.Add(1)
	tx, err := d.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	defer tx.Rollback()
	return fn(&Tx{tx: tx, stmts: d.stmts, now: time.Now().UTC().Truncate(time.Microsecond)})
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func timePtr(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromMicros(n.Int64)
	return &t
}

// inserted turns the result of an INSERT ... ON CONFLICT DO NOTHING into
// ErrExists when nothing was inserted. Conflicts are not left to fail the
// statement: in PostgreSQL a failed statement aborts the whole transaction,
// and callers go on to look at the existing row.
func inserted(res sql.Result, err error, what string) error {
	if err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	if n == 0 {
		return fmt.Errorf("store: %s: %w", what, ErrExists)
	}
	return nil
}

// isUnique reports a unique-constraint violation (SQLite and PostgreSQL).
func isUnique(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return contains(s, "UNIQUE constraint failed") || contains(s, "duplicate key value") || contains(s, "SQLSTATE 23505")
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
