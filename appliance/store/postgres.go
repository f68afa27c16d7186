package store

import (
	"context"
	"database/sql"
	"fmt"

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

// postgresDialect's migrations: the same tables as SQLite's.
var postgresDialect = dialect{
	name:      "postgres",
	writeLock: fmt.Sprintf(`SELECT pg_advisory_xact_lock(%d)`, writeLockID),
	migrations: []string{
		`
CREATE TABLE keys (
	name        TEXT PRIMARY KEY,
	cka_id      BYTEA NOT NULL UNIQUE,
	key_id      TEXT UNIQUE,
	public_key  BYTEA,
	bits        INTEGER NOT NULL DEFAULT 0,
	origin      TEXT NOT NULL,
	roles       TEXT NOT NULL,
	state       TEXT NOT NULL,
	account_key BYTEA,
	proposal_id TEXT NOT NULL,
	created_us  BIGINT NOT NULL,
	updated_us  BIGINT NOT NULL
);
CREATE TABLE officers (
	id          BIGSERIAL PRIMARY KEY,
	name        TEXT NOT NULL UNIQUE,
	secret_hash BYTEA NOT NULL,
	created_us  BIGINT NOT NULL,
	revoked_us  BIGINT
);
CREATE TABLE proposals (
	id          TEXT PRIMARY KEY,
	kind        TEXT NOT NULL,
	payload     TEXT NOT NULL,
	summary     TEXT NOT NULL,
	proposer    TEXT NOT NULL,
	state       TEXT NOT NULL,
	result      TEXT NOT NULL DEFAULT '',
	created_us  BIGINT NOT NULL,
	expires_us  BIGINT NOT NULL,
	decided_us  BIGINT
);
CREATE TABLE approvals (
	proposal_id TEXT NOT NULL REFERENCES proposals(id),
	officer     TEXT NOT NULL,
	created_us  BIGINT NOT NULL,
	PRIMARY KEY (proposal_id, officer)
);
CREATE TABLE clients (
	id          TEXT PRIMARY KEY,
	name        TEXT NOT NULL UNIQUE,
	brand       TEXT NOT NULL,
	models      TEXT NOT NULL,
	types       TEXT NOT NULL,
	secret_hash BYTEA NOT NULL,
	created_us  BIGINT NOT NULL,
	revoked_us  BIGINT
);
CREATE TABLE audit (
	seq         BIGINT PRIMARY KEY,
	time_us     BIGINT NOT NULL,
	actor       TEXT NOT NULL,
	action      TEXT NOT NULL,
	subject     TEXT NOT NULL,
	result      TEXT NOT NULL,
	details     TEXT NOT NULL,
	prev_hash   BYTEA NOT NULL,
	hash        BYTEA NOT NULL
);
CREATE TABLE settings (
	name        TEXT PRIMARY KEY,
	value       TEXT NOT NULL
);
`,
		`
CREATE TABLE models (
	brand          TEXT NOT NULL,
	model          TEXT NOT NULL,
	keys           TEXT NOT NULL,
	serial_source  TEXT NOT NULL,
	serial_prefix  TEXT NOT NULL DEFAULT '',
	next_serial    BIGINT NOT NULL DEFAULT 1,
	allow_rekey    INTEGER NOT NULL DEFAULT 0,
	proposal_id    TEXT NOT NULL,
	created_us     BIGINT NOT NULL,
	updated_us     BIGINT NOT NULL,
	PRIMARY KEY (brand, model)
);
CREATE TABLE nonces (
	id          TEXT PRIMARY KEY,
	client      TEXT NOT NULL,
	state       TEXT NOT NULL,
	created_us  BIGINT NOT NULL,
	expires_us  BIGINT NOT NULL,
	used_us     BIGINT
);
CREATE INDEX nonces_expiry ON nonces (expires_us);
CREATE TABLE serials (
	brand          TEXT NOT NULL,
	model          TEXT NOT NULL,
	serial         TEXT NOT NULL,
	device_key_id  TEXT NOT NULL,
	pending_key_id TEXT,
	revision       INTEGER NOT NULL,
	state          TEXT NOT NULL,
	assertion      BYTEA,
	client         TEXT NOT NULL,
	nonce          TEXT NOT NULL,
	updated_us     BIGINT NOT NULL,
	PRIMARY KEY (brand, model, serial)
);
CREATE TABLE signing_log (
	id            BIGSERIAL PRIMARY KEY,
	time_us       BIGINT NOT NULL,
	type          TEXT NOT NULL,
	key_id        TEXT NOT NULL,
	brand         TEXT NOT NULL,
	model         TEXT NOT NULL,
	serial        TEXT NOT NULL DEFAULT '',
	device_key_id TEXT NOT NULL DEFAULT '',
	client        TEXT NOT NULL,
	revision      INTEGER NOT NULL DEFAULT 0,
	digest        TEXT NOT NULL
);
CREATE INDEX signing_log_lookup ON signing_log (brand, model, serial);
`,
	},
}
