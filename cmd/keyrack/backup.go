package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/keyrack/keyrack/appliance/auditverify"
	"github.com/keyrack/keyrack/appliance/store"
)

// backup fetches a consistent copy of the appliance's store, verifies it
// here (audit chain and approvals, as audit verify -db does) and only then
// gives it its name: a copy cut short or altered on the way never looks
// like a backup.
func (c *cli) backup(ctx context.Context, args []string) error {
	const use = "backup -o FILE"
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	out := fs.String("o", "", "the backup file to write (must not exist)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 || *out == "" {
		return usageErr(use)
	}
	if _, err := os.Stat(*out); err == nil {
		return fmt.Errorf("%s exists: a backup never replaces a file", *out)
	}
	tmp, err := os.CreateTemp(filepath.Dir(*out), "."+filepath.Base(*out)+".part-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	resp, err := c.send(ctx, "GET", "/v1/backup", "", nil, true)
	if err != nil {
		tmp.Close()
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		tmp.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return answerError(resp.StatusCode, data)
	}
	n, err := io.Copy(tmp, resp.Body)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("receiving the backup: %w", err)
	}
	sum, err := verifyStoreFile(ctx, tmp.Name())
	if err != nil {
		return fmt.Errorf("the backup received does not verify, not kept: %w", err)
	}
	// Link, not rename: a file that appeared at out meanwhile is not
	// replaced.
	if err := os.Link(tmp.Name(), *out); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "backup %s: %d bytes; %s\n", *out, n, sum)
	fmt.Fprintln(c.stdout, "it holds the store (keys' records, officers, clients, models, the signing log and audit chain), not the token's keys: back those up with the HSM vendor's tools")
	return nil
}

// verifyStoreFile checks a store file as audit verify -db does (chain,
// checkpoints, approvals, the tables against the chain) and says what it
// checked.
func verifyStoreFile(ctx context.Context, path string) (string, error) {
	db, err := store.OpenSQLiteReadOnly(ctx, path)
	if err != nil {
		return "", err
	}
	defer db.Close()
	r, err := auditverify.VerifyStore(ctx, db, nil, nil)
	if err != nil {
		var ce *store.ChainError
		if errors.As(err, &ce) {
			return "", fmt.Errorf("audit chain broken at event %d: %s", ce.Seq, ce.Reason)
		}
		return "", err
	}
	return fmt.Sprintf("audit chain OK: %d events, %d approvals, %d checkpoints verified (signed up to event %d), %d signing-log rows match",
		r.Events, r.Approvals, r.Checkpoints, r.LastCheckpoint, r.Signatures), nil
}
