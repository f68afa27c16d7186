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

// The records officers read: the signing log (JSON or CSV) and the audit
// chain, both paged.

// signingLog lets officers read the signing log with filters and paging,
// as JSON or CSV.
func (s *Server) signingLog(c echo.Context) error {
	q, err := logQuery(c)
	if err != nil {
		return err
	}
	rows, err := s.app.SigningLog(c.Request().Context(), q)
	if err != nil {
		return err
	}
	if c.QueryParam("format") != "csv" {
		return writeJSON(c, http.StatusOK, wire.LogPage{Entries: rows})
	}
	c.Response().Header().Set(echo.HeaderContentType, "text/csv")
	c.Response().Header().Set("Content-Disposition", `attachment; filename="signing-log.csv"`)
	c.Response().WriteHeader(http.StatusOK)
	w := csv.NewWriter(c.Response())
	w.Write([]string{"id", "time", "type", "key_id", "brand", "model", "serial", "device_key_id", "client", "revision", "digest"})
	for _, e := range rows {
		w.Write(csvRow(strconv.FormatInt(e.ID, 10), e.Time.Format(time.RFC3339Nano), e.Type, e.KeyID, e.Brand, e.Model,
			e.Serial, e.DeviceKeyID, e.Client, strconv.Itoa(e.Revision), e.Digest))
	}
	w.Flush()
	return w.Error()
}

// logQuery reads the signing log's filters and paging from the query.
func logQuery(c echo.Context) (appliance.LogQuery, error) {
	q := c.QueryParams()
	f := appliance.LogQuery{Type: q.Get("type"), Brand: q.Get("brand"), Model: q.Get("model"), Serial: q.Get("serial"), Client: q.Get("client")}
	var err error
	if v := q.Get("after"); v != "" {
		if f.After, err = strconv.ParseInt(v, 10, 64); err != nil || f.After < 0 {
			return f, badRequest("invalid-argument", "after must be a log id")
		}
	}
	f.Limit = 1000
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

func (s *Server) listAudit(c echo.Context) error {
	after, err := strconv.ParseInt(defaultString(c.QueryParam("after"), "0"), 10, 64)
	if err != nil || after < 0 {
		return badRequest("invalid-argument", "after must be a non-negative event number")
	}
	limit, err := strconv.Atoi(defaultString(c.QueryParam("limit"), "100"))
	if err != nil || limit < 1 || limit > 1000 {
		return badRequest("invalid-argument", "limit must be 1..1000")
	}
	evs, err := s.app.AuditEvents(c.Request().Context(), after, limit)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, wire.AuditPage{Events: evs})
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
