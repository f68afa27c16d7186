package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/keyrack/keyrack/appliance/auditverify"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
)

// auditCommand runs the audit subcommands of this file (verify, head,
// export) and leaves the listing to audit.
func (c *cli) auditCommand(ctx context.Context, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "verify":
			return c.auditVerify(ctx, args[1:])
		case "head":
			return c.auditHead(ctx, args[1:])
		case "export":
			return c.auditExport(ctx, args[1:])
		}
	}
	return c.audit(ctx, args)
}

const auditVerifyUse = "audit verify [-db PATH | -file EXPORT] [-since-head head.json]"

// auditVerify walks the audit chain, from the store file (-db), an export
// (-file) or through the API, and checks every link, every checkpoint's
// signature against the audit keys the chain records, every officer's
// approval against the officer's key as the chain recorded it, and with
// -since-head that the chain still extends a head saved earlier. From the
// store file it also checks the checkpoints, audit keys, signing log and
// proposals on record against the chain. It names the first bad event.
func (c *cli) auditVerify(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	dbPath := fs.String("db", "", "verify the store file directly (read-only); also checks the tables against the chain")
	file := fs.String("file", "", "verify an export (keyrack audit export), with no appliance and no store")
	headFile := fs.String("since-head", "", "a head saved earlier (keyrack audit head): the chain must still extend it")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 || *dbPath != "" && *file != "" {
		return usageErr(auditVerifyUse)
	}
	var head *store.Checkpoint
	var headPub []byte
	if *headFile != "" {
		var err error
		if head, headPub, err = auditverify.ReadHead(*headFile); err != nil {
			return err
		}
	}
	var r auditverify.Report
	var err error
	switch {
	case *dbPath != "":
		var db *store.DB
		if db, err = store.OpenSQLiteReadOnly(ctx, *dbPath); err != nil {
			return err
		}
		defer db.Close()
		r, err = auditverify.VerifyStore(ctx, db, head, headPub)
	case *file != "":
		r, err = verifyExport(*file, head, headPub)
	default:
		r, err = c.verifyOverAPI(ctx, head, headPub)
	}
	if err != nil {
		return c.brokenAudit(err)
	}
	fmt.Fprintf(c.stdout, "audit chain OK: %d events, %d approvals verified\n", r.Events, r.Approvals)
	if r.LastCheckpoint > 0 {
		fmt.Fprintf(c.stdout, "checkpoints: %d verified, signed up to event %d; not yet covered: %d events\n", r.Checkpoints, r.LastCheckpoint, r.NotCovered)
	} else {
		fmt.Fprintf(c.stdout, "checkpoints: none yet; not yet covered: %d events\n", r.NotCovered)
	}
	if r.HeadChecked {
		fmt.Fprintf(c.stdout, "extends the saved head (event %d, signed %s)\n", head.Seq, head.Time.Format(time.RFC3339))
	}
	for _, k := range r.Keys {
		note := ""
		if k.AfterHead && r.HeadChecked {
			note = " (recorded after the saved head: compare with the fingerprint officers confirmed)"
		}
		fmt.Fprintf(c.stdout, "audit key %s (event %d)%s\n", k.Fingerprint, k.Event, note)
	}
	if *dbPath != "" {
		fmt.Fprintf(c.stdout, "signing log: %d rows match their signature events\n", r.Signatures)
		fmt.Fprintf(c.stdout, "proposals on record: %d checked against the chain\n", r.Proposals)
		if r.Proposals == 1000 {
			fmt.Fprintln(c.stdout, "note: the store lists at most 1000 proposals at once: only the newest 1000 were checked")
		}
	}
	return nil
}

// brokenAudit prints what verification found wrong and returns the
// command's error.
func (c *cli) brokenAudit(err error) error {
	var ce *store.ChainError
	var re *auditverify.RecordError
	var le *auditverify.LogError
	var he *auditverify.HeadError
	var te *auditverify.TableError
	switch {
	case errors.As(err, &ce):
		fmt.Fprintf(c.stdout, "BROKEN at event %d: %s (%d events before it verify)\n", ce.Seq, ce.Reason, ce.Seq-1)
		return fmt.Errorf("audit chain broken at event %d", ce.Seq)
	case errors.As(err, &re):
		fmt.Fprintf(c.stdout, "BROKEN: proposal %s: %s\n", re.Proposal, re.Reason)
		return fmt.Errorf("proposal %s on record disagrees with the audit chain", re.Proposal)
	case errors.As(err, &te):
		fmt.Fprintf(c.stdout, "BROKEN: %s\n", te.Error())
		return errors.New("the store's records disagree with the audit chain")
	case errors.As(err, &le):
		fmt.Fprintf(c.stdout, "BROKEN: %s\n", le.Error())
		return fmt.Errorf("signing-log row %d disagrees with the audit chain", le.Row)
	case errors.As(err, &he):
		fmt.Fprintf(c.stdout, "BROKEN: %s\n", he.Error())
		return errors.New("the saved head does not verify")
	}
	return err
}

// verifyOverAPI walks the chain as the appliance gives it.
func (c *cli) verifyOverAPI(ctx context.Context, head *store.Checkpoint, headPub []byte) (auditverify.Report, error) {
	v := auditverify.NewChain()
	if head != nil {
		v.SetHead(*head, headPub)
	}
	var after int64
	for {
		var ans wire.AuditPage
		if _, err := c.call(ctx, "GET", fmt.Sprintf("/v1/audit?after=%d&limit=1000", after), nil, &ans, true); err != nil {
			return auditverify.Report{}, err
		}
		if len(ans.Events) == 0 {
			return v.Finish()
		}
		batch := make([]store.AuditEvent, len(ans.Events))
		for i, e := range ans.Events {
			var err error
			if batch[i], err = eventFromWire(e); err != nil {
				return auditverify.Report{}, err
			}
		}
		if err := v.Check(batch); err != nil {
			return auditverify.Report{}, err
		}
		after = batch[len(batch)-1].Seq
	}
}

func eventFromWire(e wire.AuditEvent) (store.AuditEvent, error) {
	prev, err1 := hex.DecodeString(e.PrevHash)
	hash, err2 := hex.DecodeString(e.Hash)
	if err1 != nil || err2 != nil {
		return store.AuditEvent{}, fmt.Errorf("event %d: bad hash encoding", e.Seq)
	}
	return store.AuditEvent{Seq: e.Seq, Time: e.Time, Actor: e.Actor, Action: e.Action, Subject: e.Subject,
		Result: e.Result, Details: string(e.Details), PrevHash: prev, Hash: hash}, nil
}

// ErrExportIncomplete: an export file ends before its end line.
var ErrExportIncomplete = errors.New("the export is incomplete")

// verifyExport verifies an export file alone, streaming it.
func verifyExport(path string, head *store.Checkpoint, headPub []byte) (auditverify.Report, error) {
	f, err := os.Open(path)
	if err != nil {
		return auditverify.Report{}, err
	}
	defer f.Close()
	v := auditverify.NewChain()
	v.WithRecords()
	if head != nil {
		v.SetHead(*head, headPub)
	}
	dec := json.NewDecoder(bufio.NewReaderSize(f, 1<<16))
	var batch []store.AuditEvent
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := v.Check(batch)
		batch = batch[:0]
		return err
	}
	var keys []store.AuditKey
	var events, checkpoints int64
	sawHeader := false
	for line := 1; ; line++ {
		var l wire.ExportLine
		if err := dec.Decode(&l); err == io.EOF {
			return auditverify.Report{}, fmt.Errorf("%s: %w: no end line after %d events (the file was cut off)", path, ErrExportIncomplete, events)
		} else if err != nil {
			return auditverify.Report{}, fmt.Errorf("%s: line %d: %w", path, line, err)
		}
		switch {
		case l.Header != nil:
			if l.Header.Format != wire.ExportFormat || sawHeader || line != 1 {
				return auditverify.Report{}, fmt.Errorf("%s: not a %s export", path, wire.ExportFormat)
			}
			sawHeader = true
		case !sawHeader:
			return auditverify.Report{}, fmt.Errorf("%s: not a %s export (no header)", path, wire.ExportFormat)
		case l.Event != nil:
			e, err := eventFromWire(*l.Event)
			if err != nil {
				return auditverify.Report{}, err
			}
			batch = append(batch, e)
			events++
			if len(batch) == 1000 {
				if err := flush(); err != nil {
					return auditverify.Report{}, err
				}
			}
		case l.Checkpoint != nil:
			c, _, err := auditverify.CheckpointFromWire(*l.Checkpoint)
			if err != nil {
				return auditverify.Report{}, err
			}
			if err := flush(); err != nil {
				return auditverify.Report{}, err
			}
			if c.EventSeq > v.LastSeq() {
				return auditverify.Report{}, &store.ChainError{Seq: c.EventSeq, Reason: fmt.Sprintf(
					"missing: the export holds a checkpoint (of event %d) recorded by this event, which it does not hold", c.Seq)}
			}
			if err := v.CheckpointRecords([]store.Checkpoint{c}); err != nil {
				return auditverify.Report{}, err
			}
			checkpoints++
		case l.AuditKey != nil:
			b, _ := pem.Decode([]byte(l.AuditKey.PublicKeyPEM))
			if b == nil {
				return auditverify.Report{}, fmt.Errorf("%s: line %d: unreadable audit key", path, line)
			}
			keys = append(keys, store.AuditKey{Fingerprint: l.AuditKey.Fingerprint, PublicKey: b.Bytes, EventSeq: l.AuditKey.EventSeq})
		case l.End != nil:
			if err := flush(); err != nil {
				return auditverify.Report{}, err
			}
			if l.End.Events != events || l.End.Checkpoints != checkpoints || l.End.AuditKeys != int64(len(keys)) {
				return auditverify.Report{}, fmt.Errorf("%s: %w: its end line counts %d events, %d checkpoints, %d audit keys; it holds %d, %d, %d",
					path, ErrExportIncomplete, l.End.Events, l.End.Checkpoints, l.End.AuditKeys, events, checkpoints, len(keys))
			}
			r, err := v.Finish()
			if err != nil {
				return r, err
			}
			return r, v.AuditKeyRecords(keys)
		default:
			return auditverify.Report{}, fmt.Errorf("%s: line %d: unknown line", path, line)
		}
	}
}

// auditHead prints the appliance's latest signed checkpoint (save it:
// keyrack audit head > head.json).
func (c *cli) auditHead(ctx context.Context, args []string) error {
	if len(args) != 0 {
		return usageErr("audit head")
	}
	var raw json.RawMessage
	if _, err := c.call(ctx, "GET", "/v1/audit/head", nil, &raw, false); err != nil {
		return err
	}
	return c.printJSON(raw)
}

// auditKey prints the appliance's audit key and the others on record.
func (c *cli) auditKey(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("audit-key", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	out := fs.String("o", "", "write the PEM public key to this file")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		return usageErr("audit-key [-o FILE]")
	}
	var ak wire.AuditKeyAnswer
	if _, err := c.call(ctx, "GET", "/v1/audit-key", nil, &ak, false); err != nil {
		return err
	}
	if *out != "" {
		if err := os.WriteFile(*out, []byte(ak.PublicKeyPEM), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "wrote %s\n", *out)
	} else {
		fmt.Fprint(c.stdout, ak.PublicKeyPEM)
	}
	fmt.Fprintf(c.stdout, "fingerprint (sha256) %s\n%s, token %s, recorded by audit event %d\n", ak.Fingerprint, ak.Algorithm, ak.TokenSerial, ak.EventSeq)
	for _, k := range ak.Keys {
		if k.Fingerprint != ak.Fingerprint {
			fmt.Fprintf(c.stdout, "another appliance's audit key on this store: %s (token %s, event %d)\n", k.Fingerprint, k.TokenSerial, k.EventSeq)
		}
	}
	fmt.Fprintln(c.stdout, "Confirm the fingerprint with the appliance's console or a second officer, and keep it with the heads you save.")
	return nil
}

// auditExport writes the chain, its checkpoints and the audit keys to a
// file that `keyrack audit verify -file` verifies alone. It pages through
// the API and writes as it reads (memory stays flat), into a temporary
// file renamed into place once complete.
func (c *cli) auditExport(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("audit export", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	out := fs.String("o", "", "the file to write (JSON lines)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 || *out == "" {
		return usageErr("audit export -o FILE")
	}
	tmp, err := os.CreateTemp(filepath.Dir(*out), "."+filepath.Base(*out)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	bw := bufio.NewWriterSize(tmp, 1<<16)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(wire.ExportLine{Header: &wire.ExportHeader{Format: wire.ExportFormat, ExportedAt: time.Now().UTC(), URL: c.url}}); err != nil {
		return err
	}
	var end wire.ExportEnd
	var after, afterCkpt int64
	var ckpts []wire.AuditCheckpoint // fetched, not yet written
	for {
		var page wire.AuditPage
		if _, err := c.call(ctx, "GET", fmt.Sprintf("/v1/audit?after=%d&limit=1000", after), nil, &page, true); err != nil {
			return err
		}
		if len(page.Events) == 0 {
			break
		}
		last := page.Events[len(page.Events)-1].Seq
		// The checkpoints recorded by this page's events, each written
		// after the event that records it.
		for len(ckpts) == 0 || ckpts[len(ckpts)-1].EventSeq <= last {
			var cp wire.CheckpointPage
			if _, err := c.call(ctx, "GET", fmt.Sprintf("/v1/audit/checkpoints?after=%d&limit=1000", afterCkpt), nil, &cp, true); err != nil {
				return err
			}
			if len(cp.Checkpoints) == 0 {
				break
			}
			ckpts = append(ckpts, cp.Checkpoints...)
			afterCkpt = cp.Checkpoints[len(cp.Checkpoints)-1].EventSeq
		}
		for i := range page.Events {
			e := &page.Events[i]
			if err := enc.Encode(wire.ExportLine{Event: e}); err != nil {
				return err
			}
			end.Events++
			for len(ckpts) > 0 && ckpts[0].EventSeq <= e.Seq {
				if err := enc.Encode(wire.ExportLine{Checkpoint: &ckpts[0]}); err != nil {
					return err
				}
				end.Checkpoints++
				ckpts = ckpts[1:]
			}
		}
		after = last
	}
	// Keys last: an appliance that joins the store during the export
	// records its key in events the export may already hold.
	var ak wire.AuditKeyAnswer
	if _, err := c.call(ctx, "GET", "/v1/audit-key", nil, &ak, false); err != nil {
		return err
	}
	for i := range ak.Keys {
		if ak.Keys[i].EventSeq > after {
			continue // recorded after the events exported
		}
		if err := enc.Encode(wire.ExportLine{AuditKey: &ak.Keys[i]}); err != nil {
			return err
		}
		end.AuditKeys++
	}
	if err := enc.Encode(wire.ExportLine{End: &end}); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), *out); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "wrote %s: %d events, %d checkpoints, %d audit keys\n", *out, end.Events, end.Checkpoints, end.AuditKeys)
	return nil
}
