package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/auditverify"
	"github.com/keyrack/keyrack/appliance/store"
)

// errStateNotEmpty refuses a restore over a store that exists.
var errStateNotEmpty = errors.New("the state directory already has a store: restore only into an empty one (move the old store away first)")

// restoreStore puts a backup (keyrack backup) in place as the store of
// cfg, which must not have one yet. The backup must verify first (see
// verifyBackup). The restored store's chain then records the restore
// itself.
func restoreStore(ctx context.Context, cfg appliance.Config, file, headFile string) (string, error) {
	if cfg.Store.Driver != "sqlite" {
		return "", fmt.Errorf("the store is %s: restore it with pg_restore, then run keyrack audit verify", cfg.Store.Driver)
	}
	target := cfg.Store.Path
	for _, p := range []string{target, target + "-wal"} {
		if _, err := os.Stat(p); err == nil {
			return "", fmt.Errorf("%s: %w", p, errStateNotEmpty)
		}
	}
	var head *store.Checkpoint
	var headPub []byte
	if headFile != "" {
		var err error
		if head, headPub, err = auditverify.ReadHead(headFile); err != nil {
			return "", err
		}
	}
	r, err := verifyBackup(ctx, file, head, headPub)
	if err != nil {
		return "", fmt.Errorf("backup %s refused: %w", file, err)
	}
	events, approvals := r.Events, r.Approvals
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		return "", err
	}
	if err := copyDurably(file, target); err != nil {
		return "", err
	}
	db, err := store.OpenSQLite(ctx, target)
	if err != nil {
		return "", fmt.Errorf("opening the restored store: %w", err)
	}
	defer db.Close()
	err = db.Update(ctx, func(tx *store.Tx) error {
		_, err := tx.Audit("system", "store.restore", filepath.Base(file), "ok", map[string]any{"events": events, "approvals": approvals})
		return err
	})
	if err != nil {
		return "", err
	}
	msg := fmt.Sprintf("restored %s into %s: audit chain of %d events, %d approvals and %d checkpoints verified (signed up to event %d)",
		file, target, events, approvals, r.Checkpoints, r.LastCheckpoint)
	if head != nil {
		msg += fmt.Sprintf("; it extends the saved head (event %d)", head.Seq)
	}
	return msg, nil
}

// verifyBackup checks a backup read-only, as keyrack audit verify -db
// does: every link, checkpoint signature and approval, the checkpoints,
// audit keys, signing log and proposals against the chain; with head (a
// head saved outside the store), that the backup's chain still extends
// it: an older copy, or one cut short, is refused.
func verifyBackup(ctx context.Context, file string, head *store.Checkpoint, headPub []byte) (auditverify.Report, error) {
	db, err := store.OpenSQLiteReadOnly(ctx, file)
	if err != nil {
		return auditverify.Report{}, err
	}
	defer db.Close()
	return auditverify.VerifyStore(ctx, db, head, headPub)
}

// copyDurably copies src to dst (mode 0600) through a temporary file that
// is synced and renamed, and syncs the directory: a crash leaves either no
// store or the whole one.
func copyDurably(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".restoring"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(filepath.Dir(dst))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
