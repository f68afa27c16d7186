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
// cfg, which must not have one yet. The backup must verify first: its
// audit chain link by link and every officer approval it records. The
// restored store's chain then records the restore itself.
func restoreStore(ctx context.Context, cfg appliance.Config, file string) (string, error) {
	if cfg.Store.Driver != "sqlite" {
		return "", fmt.Errorf("the store is %s: restore it with pg_restore, then run keyrack audit verify", cfg.Store.Driver)
	}
	target := cfg.Store.Path
	for _, p := range []string{target, target + "-wal"} {
		if _, err := os.Stat(p); err == nil {
			return "", fmt.Errorf("%s: %w", p, errStateNotEmpty)
		}
	}
	events, approvals, err := verifyBackup(ctx, file)
	if err != nil {
		return "", fmt.Errorf("backup %s refused: %w", file, err)
	}
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
	return fmt.Sprintf("restored %s into %s: audit chain of %d events and %d approvals verified", file, target, events, approvals), nil
}

// verifyBackup checks a backup's chain and approvals, read-only.
func verifyBackup(ctx context.Context, file string) (events int64, approvals int, err error) {
	db, err := store.OpenSQLiteReadOnly(ctx, file)
	if err != nil {
		return 0, 0, err
	}
	defer db.Close()
	chain, appr := store.NewAuditVerifier(), auditverify.New()
	var after int64
	for {
		var batch []store.AuditEvent
		if err := db.View(ctx, func(tx *store.Tx) (err error) { batch, err = tx.AuditEvents(after, 1000); return err }); err != nil {
			return chain.Count, appr.Verified, err
		}
		if len(batch) == 0 {
			return chain.Count, appr.Verified, nil
		}
		if err := chain.Check(batch); err != nil {
			return chain.Count, appr.Verified, err
		}
		if err := appr.Check(batch); err != nil {
			return chain.Count, appr.Verified, err
		}
		after = batch[len(batch)-1].Seq
	}
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
