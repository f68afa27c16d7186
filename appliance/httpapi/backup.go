package httpapi

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// backup streams a consistent copy of the store (GET /v1/backup). The
// status and headers are sent with the first bytes of the copy, so that a
// failure before it (PostgreSQL, a full disk) is an ordinary JSON error.
func (s *Server) backup(c echo.Context) error {
	w := &lazyHeaderWriter{c: c, rc: http.NewResponseController(c.Response()), timeout: time.Duration(s.cfg.HTTP.WriteTimeout)}
	_, err := s.app.Backup(c.Request().Context(), officerOf(c), w)
	if err != nil && !w.started {
		return err
	}
	if err != nil {
		// Once bytes have left, the status cannot change: abort, so the
		// client sees a broken answer, not the clean end of a short copy
		// (the CLI would also find it when it verifies the copy).
		panic(http.ErrAbortHandler)
	}
	return nil
}

// lazyHeaderWriter sends the status and headers with the first bytes, and
// pushes the server's write deadline on with every write, so that a large
// store is not cut by the write timeout while it is being sent.
type lazyHeaderWriter struct {
	c       echo.Context
	rc      *http.ResponseController
	timeout time.Duration
	started bool
}

func (w *lazyHeaderWriter) Write(p []byte) (int, error) {
	if !w.started {
		w.started = true
		h := w.c.Response().Header()
		h.Set(echo.HeaderContentType, "application/vnd.sqlite3")
		h.Set(echo.HeaderContentDisposition, `attachment; filename="keyrack-backup.db"`)
		h.Set("Cache-Control", "no-store")
		w.c.Response().WriteHeader(http.StatusOK)
	}
	if w.timeout > 0 {
		// A test recorder has no deadline to push: nothing to do then.
		_ = w.rc.SetWriteDeadline(time.Now().Add(w.timeout))
	}
	return w.c.Response().Write(p)
}
