package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/keyrack/keyrack/appliance/store"
)

// BackupInfo describes a backup just written.
type BackupInfo struct {
	Bytes int64
}

// Backup writes a consistent copy of the embedded store to w while the
// appliance runs. The backup's own audit event is recorded first, so the
// copy holds the record that it was taken and by whom. The copy is made in
// the state directory (never elsewhere: it holds officers' public keys,
// credential hashes and wrapped key blobs) and removed once streamed.
// What it does not hold is the token's keys: those are backed up with the
// HSM vendor's tools.
func (a *Appliance) Backup(ctx context.Context, officer string, w io.Writer) (BackupInfo, error) {
	if a.db.Shared() {
		return BackupInfo{}, badInput("backup-unsupported", "this appliance's store is PostgreSQL: back it up with pg_dump (see the README), then keyrack audit verify")
	}
	err := a.db.Update(ctx, func(tx *store.Tx) error {
		_, err := tx.Audit("officer:"+officer, "store.backup", "store", "ok", nil)
		return err
	})
	if err != nil {
		return BackupInfo{}, err
	}
	// A signed head inside the copy: the checkpoint covers everything up
	// to the backup's own event, so a restore of the copy can be checked
	// against it, and a copy altered later no longer matches it.
	if _, _, err := a.Checkpoint(ctx); err != nil {
		return BackupInfo{}, err
	}
	dir, err := os.MkdirTemp(a.cfg.StateDir, ".backup-")
	if err != nil {
		return BackupInfo{}, fmt.Errorf("backup: %w", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "keyrack.db")
	if err := a.db.BackupTo(ctx, path); err != nil {
		if errors.Is(err, store.ErrBackupUnsupported) {
			return BackupInfo{}, badInput("backup-unsupported", err.Error())
		}
		return BackupInfo{}, err
	}
	f, err := os.Open(path)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("backup: %w", err)
	}
	defer f.Close()
	n, err := io.Copy(w, f)
	if err != nil {
		return BackupInfo{Bytes: n}, fmt.Errorf("backup: sending: %w", err)
	}
	a.log.Info("store backed up", "officer", officer, "bytes", n)
	return BackupInfo{Bytes: n}, nil
}
