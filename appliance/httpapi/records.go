package httpapi

import (
	"encoding/csv"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/wire"
	"github.com/labstack/echo/v4"
)

// The records officers read: the signing log (JSON pages, or CSV) and the
// audit chain (JSON pages). A page that is not the last says so: next in
// its body (a CSV answer with a limit: the Keyrack-Next header) and a
// Link header, rel="next". A CSV answer without a limit is the whole log
// matching the filters, streamed page by page as it is read.

var csvHeader = []string{"id", "time", "type", "key_id", "brand", "model", "serial", "device_key_id", "client", "revision", "digest"}

// signingLog lets officers read the signing log with filters and paging,
// as JSON or CSV.
func (s *Server) signingLog(c echo.Context) error {
	asCSV := c.QueryParam("format") == "csv"
	q, err := logQuery(c, !asCSV)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if asCSV && q.Limit == 0 {
		return s.exportSigningLog(c, q)
	}
	page, err := s.app.SigningLogPage(ctx, q)
	if err != nil {
		return err
	}
	if page.Next != 0 {
		setNext(c, page.Next)
	}
	if !asCSV {
		return writeJSON(c, http.StatusOK, page)
	}
	csvHeaders(c)
	c.Response().WriteHeader(http.StatusOK)
	w := csv.NewWriter(c.Response())
	w.Write(csvHeader)
	writeCSVRows(w, page.Entries)
	w.Flush()
	return w.Error()
}

// exportSigningLog streams every row matching q as CSV, one page of the
// store at a time, flushed as it is written: memory stays one page
// whatever the log's length, and the write deadline is pushed on with
// each page, so that a long export is not cut by the server's write
// timeout while it makes progress. The answer ends with the RowsTrailer;
// an export that fails after its first bytes is aborted, so that the
// client sees a broken answer rather than a clean end of a short one.
func (s *Server) exportSigningLog(c echo.Context, q appliance.LogQuery) error {
	ctx := c.Request().Context()
	resp := c.Response()
	rc := http.NewResponseController(resp)
	wt := time.Duration(s.cfg.HTTP.WriteTimeout)
	var w *csv.Writer
	start := func() {
		csvHeaders(c)
		resp.Header().Set("Trailer", wire.RowsTrailer)
		resp.WriteHeader(http.StatusOK)
		w = csv.NewWriter(resp)
		w.Write(csvHeader)
	}
	n, err := s.app.ExportSigningLog(ctx, q, func(rows []wire.LogEntry) error {
		if w == nil {
			start()
		}
		if wt > 0 {
			// Not every writer has a deadline (a test recorder): then
			// the server has no write timeout to push on either.
			_ = rc.SetWriteDeadline(time.Now().Add(wt))
		}
		writeCSVRows(w, rows)
		w.Flush()
		if err := w.Error(); err != nil {
			return err
		}
		return rc.Flush()
	})
	if err != nil {
		if w == nil {
			return err // nothing sent yet: an ordinary error answer
		}
		s.log.Warn("signing-log export cut short", "rows", n, "err", err)
		panic(http.ErrAbortHandler)
	}
	if w == nil {
		start()
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return err
	}
	resp.Header().Set(wire.RowsTrailer, strconv.FormatInt(n, 10))
	return nil
}

func csvHeaders(c echo.Context) {
	c.Response().Header().Set(echo.HeaderContentType, "text/csv")
	c.Response().Header().Set("Content-Disposition", `attachment; filename="signing-log.csv"`)
}

func writeCSVRows(w *csv.Writer, rows []wire.LogEntry) {
	for _, e := range rows {
		w.Write(csvRow(strconv.FormatInt(e.ID, 10), e.Time.Format(time.RFC3339Nano), e.Type, e.KeyID, e.Brand, e.Model,
			e.Serial, e.DeviceKeyID, e.Client, strconv.Itoa(e.Revision), e.Digest))
	}
}

// setNext says that another page follows, and where it starts: the
// request's own query with after set to the cursor, in a Link header
// (RFC 8288), and for CSV, which has no body field for it, in NextHeader.
func setNext(c echo.Context, next int64) {
	q := c.QueryParams()
	q.Set("after", strconv.FormatInt(next, 10))
	c.Response().Header().Set("Link", "<"+c.Request().URL.Path+"?"+q.Encode()+`>; rel="next"`)
	c.Response().Header().Set(wire.NextHeader, strconv.FormatInt(next, 10))
}

// logQuery reads the signing log's filters and paging from the query. A
// JSON answer is a page (paged: limit defaults to 1000); a CSV answer is
// the whole range unless a limit is asked (Limit 0).
func logQuery(c echo.Context, paged bool) (appliance.LogQuery, error) {
	q := c.QueryParams()
	f := appliance.LogQuery{Type: q.Get("type"), Brand: q.Get("brand"), Model: q.Get("model"), Serial: q.Get("serial"), Client: q.Get("client")}
	var err error
	if v := q.Get("after"); v != "" {
		if f.After, err = strconv.ParseInt(v, 10, 64); err != nil || f.After < 0 {
			return f, badRequest("invalid-argument", "after must be a log id")
		}
	}
	if paged {
		f.Limit = 1000
	}
	if v := q.Get("limit"); v != "" {
		if f.Limit, err = strconv.Atoi(v); err != nil || f.Limit < 1 || f.Limit > 10000 {
			return f, badRequest("invalid-argument", "limit must be 1..10000")
		}
	}
	for name, dst := range map[string]*time.Time{"since": &f.Since, "until": &f.Until} {
		if v := q.Get(name); v != "" {
			if *dst, err = time.Parse(time.RFC3339, v); err != nil {
				return f, badRequest("invalid-argument", name+" must be an RFC 3339 time")
			}
		}
	}
	return f, nil
}

// auditPageParams reads the after (an event number) and limit of a page
// of the audit chain or its checkpoints.
func auditPageParams(c echo.Context) (after int64, limit int, err error) {
	after, err = strconv.ParseInt(defaultString(c.QueryParam("after"), "0"), 10, 64)
	if err != nil || after < 0 {
		return 0, 0, badRequest("invalid-argument", "after must be a non-negative event number")
	}
	limit, err = strconv.Atoi(defaultString(c.QueryParam("limit"), "100"))
	if err != nil || limit < 1 || limit > 1000 {
		return 0, 0, badRequest("invalid-argument", "limit must be 1..1000")
	}
	return after, limit, nil
}

func (s *Server) listAudit(c echo.Context) error {
	after, limit, err := auditPageParams(c)
	if err != nil {
		return err
	}
	page, err := s.app.AuditPage(c.Request().Context(), after, limit)
	if err != nil {
		return err
	}
	if page.Next != 0 {
		setNext(c, page.Next)
	}
	return writeJSON(c, http.StatusOK, page)
}

// csvRow makes cells safe to open in a spreadsheet: a cell that starts with
// a character a spreadsheet takes for a formula (= + - @, or a tab or
// carriage return before one) gets a leading apostrophe, which shows it as
// text. Key ids and digests are base64url and may start with '-': they
// get one too; strip it to compare them with the JSON log.
func csvRow(cells ...string) []string {
	for i, c := range cells {
		if c != "" && strings.ContainsRune("=+-@\t\r", rune(c[0])) {
			cells[i] = "'" + c
		}
	}
	return cells
}
