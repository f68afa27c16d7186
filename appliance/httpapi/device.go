package httpapi

import (
	"bytes"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/wire"
)

// The device-service protocol snapd speaks (gadget device-service.url
// pointing at /v1/): POST request-id, then POST serial with the
// serial-request and the model; and the other assertions factory clients
// ask for.

func (s *Server) deviceRoutes(e *echo.Echo) {
	// request-id and serial are for device-service clients, whose key is
	// in gadget images; the other assertions for signing clients only.
	device := s.requireClient(appliance.DeviceServiceClient)
	e.POST("/v1/request-id", s.requestID, device)
	// Admission comes first: an overloaded appliance answers at once,
	// before spending anything on the request.
	e.POST("/v1/serial", s.serial, s.admission, device)
	e.POST("/v1/model", s.signModel, s.admission, s.requireSigningClient)
	e.POST("/v1/system-user", s.signSystemUser, s.admission, s.requireSigningClient)
	e.POST("/v1/preseed", s.signPreseed, s.admission, s.requireSigningClient)
}

func (s *Server) requestID(c echo.Context) error {
	id, err := s.app.IssueRequestID(c.Request().Context(), clientOf(c))
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, wire.RequestID{RequestID: id})
}

func (s *Server) serial(c echo.Context) error {
	if mt, _, err := mime.ParseMediaType(c.Request().Header.Get(echo.HeaderContentType)); err != nil || mt != asserts.MediaType {
		return unsupportedMediaType("send the serial-request and model as Content-Type: " + asserts.MediaType)
	}
	as, err := s.app.IssueSerial(c.Request().Context(), clientOf(c), appliance.SerialRequest{
		Stream:       c.Request().Body,
		SerialStream: strings.Contains(c.Request().Header.Get("Snap-Device-Capabilities"), "serial-stream"),
	})
	if err != nil {
		return err
	}
	return writeAssertions(c, as...)
}

func (s *Server) signModel(c echo.Context) error {
	var req wire.ModelSignRequest
	if _, err := decodeJSON(c, &req); err != nil {
		return err
	}
	a, err := s.app.SignModel(c.Request().Context(), clientOf(c), req)
	if err != nil {
		return err
	}
	return writeAssertions(c, a)
}

func (s *Server) signSystemUser(c echo.Context) error {
	var req wire.SystemUserRequest
	body, err := decodeJSON(c, &req)
	defer clear(body) // it holds the password
	if err != nil {
		return err
	}
	a, err := s.app.SignSystemUser(c.Request().Context(), clientOf(c), req)
	if err != nil {
		return err
	}
	return writeAssertions(c, a)
}

func (s *Server) signPreseed(c echo.Context) error {
	var req wire.PreseedRequest
	if _, err := decodeJSON(c, &req); err != nil {
		return err
	}
	a, err := s.app.SignPreseed(c.Request().Context(), clientOf(c), req)
	if err != nil {
		return err
	}
	return writeAssertions(c, a)
}

// writeAssertions answers with an assertion stream.
func writeAssertions(c echo.Context, as ...asserts.Assertion) error {
	var buf bytes.Buffer
	enc := asserts.NewEncoder(&buf)
	for _, a := range as {
		if err := enc.Encode(a); err != nil {
			return err
		}
	}
	c.Response().Header().Set(echo.HeaderContentType, asserts.MediaType)
	c.Response().Header().Set(echo.HeaderContentLength, strconv.Itoa(buf.Len()))
	c.Response().WriteHeader(http.StatusOK)
	_, err := c.Response().Write(buf.Bytes())
	return err
}
