package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/keyrack/keyrack/appliance/wire"
)

// The officers' exports: keyrack log and keyrack audit print everything
// that matches, page after page as the appliance serves it (the CSV log
// in one streamed answer), so that memory stays one page whatever the
// length of the records. Nothing is cut off silently: with -limit N, a
// notice on standard error says when more matches and how to go on.

// errCutShort: an export ended before the appliance said it was whole.
var errCutShort = errors.New("the export was cut short")

// logPage is how many signing-log rows or audit events one request asks
// for (the API's most for the audit chain).
const logPage = 1000

// stderrIsTerminal says whether w is a terminal: progress lines are for a
// person watching, never for a file or a pipe. A variable so that tests
// can watch the progress line.
var stderrIsTerminal = func(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progress shows, on a terminal only and only once an export has taken a
// second, how many rows it has written so far, on one line rewritten in
// place.
type progress struct {
	w     io.Writer
	what  string
	on    bool
	start time.Time
	last  time.Time
	shown bool
	n     int64
}

func (c *cli) newProgress(what string) *progress {
	return &progress{w: c.stderr, what: what, on: stderrIsTerminal(c.stderr), start: time.Now()}
}

func (p *progress) add(n int) {
	p.n += int64(n)
	if !p.on {
		return
	}
	now := time.Now()
	if now.Sub(p.start) < progressAfter || now.Sub(p.last) < progressEvery {
		return
	}
	p.last, p.shown = now, true
	fmt.Fprintf(p.w, "\r%s: %d rows", p.what, p.n)
}

// done ends the progress line, if one was shown.
func (p *progress) done() {
	if p.shown {
		fmt.Fprintf(p.w, "\r%s: %d rows, done\n", p.what, p.n)
	}
}

// progressAfter and progressEvery: variables so that tests see the line
// without waiting.
var (
	progressAfter = time.Second
	progressEvery = 250 * time.Millisecond
)

// signingLog prints the signing log matching the filters, as a table, CSV
// or JSON lines: all of it, or the first -limit rows and a notice when
// more match.
func (c *cli) signingLog(ctx context.Context, args []string) error {
	const use = "log [-type T] [-brand B] [-model M] [-serial S] [-client C] [-since T] [-until T] [-after ID] [-limit N] [-csv | -json]"
	fs := flag.NewFlagSet("log", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	q := url.Values{}
	for _, f := range []string{"type", "brand", "model", "serial", "client", "since", "until"} {
		fs.Func(f, "only rows of this "+f+" (since, until: RFC 3339 times)", func(v string) error { q.Set(f, v); return nil })
	}
	after := fs.Int64("after", 0, "only rows after this log id (the cursor a limited listing names)")
	limit := fs.Int64("limit", 0, "at most this many rows (default: every matching row); says so when more match")
	asCSV := fs.Bool("csv", false, "CSV output (the whole matching log, streamed)")
	asJSON := fs.Bool("json", false, "one JSON object per row, as the appliance gives them (JSON lines)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 || *asCSV && *asJSON || *after < 0 || *limit < 0 {
		return usageErr(use)
	}
	if *after > 0 {
		q.Set("after", strconv.FormatInt(*after, 10))
	}
	if *asCSV {
		return c.signingLogCSV(ctx, q, *limit)
	}
	out := bufio.NewWriter(c.stdout)
	var tw *tabwriter.Writer
	p := c.newProgress("signing log")
	next, err := c.pages(ctx, *after, *limit, func(after int64, n int) (int64, error) {
		q.Set("after", strconv.FormatInt(after, 10))
		q.Set("limit", strconv.Itoa(n))
		var page wire.LogPage
		if _, err := c.call(ctx, "GET", "/v1/signing-log?"+q.Encode(), nil, &page, true); err != nil {
			return 0, err
		}
		if *asJSON {
			for _, e := range page.Entries {
				if err := writeJSONLine(out, e); err != nil {
					return 0, err
				}
			}
		} else {
			// Columns are aligned within each page: aligning them over
			// the whole log would hold all of it in memory.
			if tw == nil {
				tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tTIME\tTYPE\tBRAND/MODEL\tSERIAL\tCLIENT\tKEY")
			}
			for _, e := range page.Entries {
				// RFC3339Nano is how the time came over the wire, so the
				// column shows exactly the string the appliance sent.
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s/%s\t%s\t%s\t%.16s…\n", e.ID, e.Time.Format(time.RFC3339Nano), e.Type, e.Brand, e.Model, e.Serial, e.Client, e.KeyID)
			}
			if err := tw.Flush(); err != nil {
				return 0, err
			}
		}
		p.add(len(page.Entries))
		return page.Next, out.Flush()
	})
	return c.endListing(p, out, err, "rows", next)
}

// pages runs get for each page from after on, asking for at most page
// items each time and limit in all (0: no limit), until the appliance
// says no page follows. get returns the next page's cursor (0: none). It
// returns the cursor that would have come next when the limit stopped it
// with more to come, and 0 when everything was read.
func (c *cli) pages(ctx context.Context, after, limit int64, get func(after int64, n int) (int64, error)) (int64, error) {
	var read int64
	for {
		n := int64(logPage)
		if limit > 0 && limit-read < n {
			n = limit - read
		}
		next, err := get(after, int(n))
		if err != nil {
			return 0, err
		}
		read += n
		if next == 0 {
			return 0, nil
		}
		if limit > 0 && read >= limit {
			return next, nil
		}
		if next <= after {
			return 0, fmt.Errorf("the appliance's next page (after %d) does not move on from %d", next, after)
		}
		after = next
	}
}

// endListing finishes a paged listing written to out: ends its progress
// line, flushes what is buffered, and returns the first error or, with
// none, says whether more would follow (moreNotice).
func (c *cli) endListing(p *progress, out *bufio.Writer, err error, what string, next int64) error {
	p.done()
	if ferr := out.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return err
	}
	c.moreNotice(what, p.n, next)
	return nil
}

// moreNotice says on standard error that a listing stopped at its limit
// with more to come, and how to go on from there.
func (c *cli) moreNotice(what string, shown, next int64) {
	if next != 0 {
		fmt.Fprintf(c.stderr, "keyrack: %d %s shown, more match: continue with -after %d\n", shown, what, next)
	}
}

// signingLogCSV streams the signing log as the appliance writes it. The
// whole log (no limit) ends with the appliance's count of rows in a
// trailer: an answer without it, or with another count, was cut short
// and is an error, whatever was written.
func (c *cli) signingLogCSV(ctx context.Context, q url.Values, limit int64) error {
	q.Set("format", "csv")
	if limit > 0 {
		q.Set("limit", strconv.FormatInt(limit, 10))
	}
	resp, err := c.send(ctx, "GET", "/v1/signing-log?"+q.Encode(), "", nil, true)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return answerError(resp.StatusCode, data)
	}
	p := c.newProgress("signing log")
	p.n = -1 // the header line is not a row
	lines, err := copyCounting(c.stdout, resp.Body, p)
	p.done()
	rows := lines - 1 // the header line
	if err != nil {
		return fmt.Errorf("%w after %d rows: %w", errCutShort, max(rows, 0), err)
	}
	if limit > 0 {
		if next, _ := strconv.ParseInt(resp.Header.Get(wire.NextHeader), 10, 64); next > 0 {
			c.moreNotice("rows", rows, next)
		}
		return nil
	}
	// Serials, names, ids and digests hold no line breaks, so a CSV row
	// is a line.
	if want := resp.Trailer.Get(wire.RowsTrailer); want != strconv.FormatInt(rows, 10) {
		return fmt.Errorf("%w: %d rows received, the appliance sent %q", errCutShort, rows, want)
	}
	return nil
}

// copyCounting copies src to dst and counts the lines, reporting them to
// p as they pass.
func copyCounting(dst io.Writer, src io.Reader, p *progress) (int64, error) {
	buf := make([]byte, 64<<10)
	var lines int64
	for {
		n, err := src.Read(buf)
		if n > 0 {
			k := 0
			for _, b := range buf[:n] {
				if b == '\n' {
					k++
				}
			}
			lines += int64(k)
			p.add(k)
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return lines, werr
			}
		}
		if err == io.EOF {
			return lines, nil
		}
		if err != nil {
			return lines, err
		}
	}
}

func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	_, err = w.Write(b)
	return err
}

// auditList prints the audit chain from -after on: a table or JSON lines,
// all of it, or the first -limit events and a notice when more follow.
func (c *cli) auditList(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	after := fs.Int64("after", 0, "only events after this number")
	limit := fs.Int64("limit", 0, "at most this many events (default: every one); says so when more follow")
	asJSON := fs.Bool("json", false, "one JSON object per event, as the appliance gives them (JSON lines)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 || *after < 0 || *limit < 0 {
		return usageErr("audit [-after N] [-limit N] [-json]")
	}
	out := bufio.NewWriter(c.stdout)
	p := c.newProgress("audit")
	next, err := c.pages(ctx, *after, *limit, func(after int64, n int) (int64, error) {
		var page wire.AuditPage
		if _, err := c.call(ctx, "GET", fmt.Sprintf("/v1/audit?after=%d&limit=%d", after, n), nil, &page, true); err != nil {
			return 0, err
		}
		for _, e := range page.Events {
			if *asJSON {
				if err := writeJSONLine(out, e); err != nil {
					return 0, err
				}
				continue
			}
			fmt.Fprintf(out, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.Time.Format(time.RFC3339), e.Actor, e.Action, e.Subject, e.Result, compact(e.Details))
		}
		p.add(len(page.Events))
		return page.Next, out.Flush()
	})
	return c.endListing(p, out, err, "events", next)
}
