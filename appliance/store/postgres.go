package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	_ "github.com/jackc/pgx/v5/stdlib" // PostgreSQL, for sites with several appliances
)

// OpenPostgres opens the store in a PostgreSQL database (dsn in pgx form)
// and brings its schema up to date. Several appliances may share one
// database: their write batches are serialized by a transaction-level
// advisory lock, so duplicate decisions and the audit chain stay exact
// across appliances.
func OpenPostgres(ctx context.Context, dsn string) (*DB, error) {
	sdb, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	sdb.SetMaxOpenConns(16)
	if err := sdb.PingContext(ctx); err != nil {
		sdb.Close()
		return nil, fmt.Errorf("store: connecting to PostgreSQL: %w", err)
	}
	d := &DB{db: sdb, dialect: postgresDialect}
	// Migrations of several appliances starting together must not race.
	conn, err := sdb.Conn(ctx)
	if err != nil {
		sdb.Close()
		return nil, err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, writeLockID); err != nil {
		sdb.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	err = d.migrate(ctx)
	conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, writeLockID)
	if err != nil {
		sdb.Close()
		return nil, err
	}
	d.startWriter()
	return d, nil
}

// writeLockID names the advisory lock every write batch takes.
const writeLockID = 0x6b6579726163 // "keyrac"

// postgresDialect's migrations are SQLite's, translated: one schema, two
// spellings of its types. The translation is fixed, so an applied
// migration reads the same forever.
var postgresDialect = dialect{
	name:      "postgres",
	writeLock: fmt.Sprintf(`SELECT pg_advisory_xact_lock(%d)`, writeLockID),
	// Asynchronous commit for this transaction only: visible at once,
	// flushed with the next synchronous commit at the latest.
	unsynced:   `SET LOCAL synchronous_commit = off`,
	migrations: toPostgres(sqliteDialect.migrations),
}

func toPostgres(migrations []string) []string {
	r := strings.NewReplacer(
		"INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY",
		"INTEGER PRIMARY KEY", "BIGINT PRIMARY KEY", // SQLite's is 64-bit
		"BLOB", "BYTEA",
	)
	out := make([]string, len(migrations))
	for i, m := range migrations {
		out[i] = r.Replace(m)
	}
	return out
}
