package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// backup streams a consistent copy of the store (GET /v1/backup). The
// status and headers are sent with the first bytes of the copy, so that a
// failure before it (PostgreSQL, a full disk) is an ordinary JSON error.
func (s *Server) backup(c echo.Context) error {
	w := &lazyHeaderWriter{c: c}
	_, err := s.app.Backup(c.Request().Context(), officerOf(c), w)
	if err != nil && !w.started {
		return err
	}
	// Once bytes have left, the status cannot change: the CLI finds a cut
	// copy when it verifies it.
	return nil
}

type lazyHeaderWriter struct {
	c       echo.Context
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
	return w.c.Response().Write(p)
}
