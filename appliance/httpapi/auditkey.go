package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/keyrack/keyrack/appliance/wire"
)

// auditRoutes serves what anchors the audit chain outside the store.
//
// The audit key and the latest signed head are for anyone: they carry no
// secret (a public key, a seq, a hash, a signature; the count of events
// is no more than keyrack_audit_events_total on /metrics already says),
// and what makes them worth having is that someone other than the store's
// administrator records them: a monitoring job or a log server, which
// should not need an officer's key and a session for it. The checkpoints
// themselves, like the events, are for officers.
func (s *Server) auditRoutes(e *echo.Echo) {
	e.GET("/v1/audit-key", s.getAuditKey)
	e.GET("/v1/audit/head", s.getAuditHead)
	e.GET("/v1/audit/checkpoints", s.listCheckpoints, s.requireOfficer)
}

func (s *Server) getAuditKey(c echo.Context) error {
	keys, err := s.app.AuditKeys(c.Request().Context())
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, wire.AuditKeyAnswer{AuditKey: s.app.AuditKey(), Keys: keys})
}

func (s *Server) getAuditHead(c echo.Context) error {
	h, err := s.app.AuditHead(c.Request().Context())
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return writeJSON(c, http.StatusOK, h)
}

func (s *Server) listCheckpoints(c echo.Context) error {
	after, limit, err := auditPageParams(c)
	if err != nil {
		return err
	}
	cs, err := s.app.AuditCheckpoints(c.Request().Context(), after, limit)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, wire.CheckpointPage{Checkpoints: cs})
}
