package httpapi

import (
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"
	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance/wire"
)

// Model templates and ad-hoc signatures: both ceremonies, so officers
// only; the one thing that leaves is a signed assertion.

func (s *Server) listTemplates(c echo.Context) error {
	ts, err := s.app.ListModelTemplates(c.Request().Context())
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, wire.TemplateList{Templates: ts})
}

func (s *Server) proposeTemplate(c echo.Context) error {
	var req wire.TemplateRequest
	if _, err := decodeJSON(c, &req); err != nil {
		return err
	}
	out, err := s.app.ProposeModelTemplate(c.Request().Context(), officerOf(c), req)
	return answerStep(c, out, err)
}

func (s *Server) proposeSign(c echo.Context) error {
	var req wire.SignRequest
	if _, err := decodeJSON(c, &req); err != nil {
		return err
	}
	out, err := s.app.ProposeSign(c.Request().Context(), officerOf(c), req)
	return answerStep(c, out, err)
}

// signedAssertion answers the assertion an executed assertion.sign
// proposal made, as snap sign prints it.
func (s *Server) signedAssertion(c echo.Context) error {
	b, err := s.app.SignedAssertion(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderContentType, asserts.MediaType)
	c.Response().Header().Set(echo.HeaderContentLength, strconv.Itoa(len(b)))
	c.Response().WriteHeader(http.StatusOK)
	_, err = c.Response().Write(b)
	return err
}
