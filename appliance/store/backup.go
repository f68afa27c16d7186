package store

import (
	"context"
	"errors"
	"fmt"
	"os"
)

// ErrBackupUnsupported: the store is PostgreSQL, whose own tools
// (pg_dump, pg_restore) make consistent copies of a shared database.
var ErrBackupUnsupported = errors.New("store: the appliance backs up only its embedded SQLite store; back up PostgreSQL with pg_dump")

// BackupTo writes a consistent copy of the store to path, which must not
// exist, while the appliance runs: SQLite's VACUUM INTO reads one
// snapshot (the write-ahead log included) on a reader connection, so
// writers go on meanwhile and the copy holds every transaction committed
// before it began and none after. The copy is a complete store, compacted,
// with no write-ahead log of its own.
func (d *DB) BackupTo(ctx context.Context, path string) error {
	if d.Shared() {
		return ErrBackupUnsupported
	}
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("store: backup %s: %w", path, os.ErrExist)
	}
	if _, err := d.db.ExecContext(ctx, `VACUUM INTO $1`, path); err != nil {
		os.Remove(path)
		return fmt.Errorf("store: backup: %w", err)
	}
	// The copy holds officers' public keys, clients' credential hashes and
	// wrapped key blobs: no plaintext secret, but nothing for others.
	return os.Chmod(path, 0o600)
}
