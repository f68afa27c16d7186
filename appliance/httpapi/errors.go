package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/wire"
)

// apiError is an error as the API answers it: a status, the stable code
// and a message shown to the caller (never a secret).
type apiError struct {
	Status     int
	Code       string
	Message    string
	RetryAfter int // seconds; sent as Retry-After when > 0
	Err        error
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }
func (e *apiError) Unwrap() error { return e.Err }

// statusOf is the one mapping from the core's error kinds to HTTP.
// snapd retries a registration only on a status above 500: whatever may
// pass later (the token, load) is 503.
var statusOf = map[appliance.ErrorKind]int{
	appliance.Internal:        http.StatusInternalServerError,
	appliance.BadInput:        http.StatusBadRequest,
	appliance.Unauthenticated: http.StatusUnauthorized,
	appliance.Refused:         http.StatusForbidden,
	appliance.NotFound:        http.StatusNotFound,
	appliance.Conflict:        http.StatusConflict,
	appliance.RateLimited:     http.StatusTooManyRequests,
	appliance.Unavailable:     http.StatusServiceUnavailable,
	appliance.Overloaded:      http.StatusServiceUnavailable,
	appliance.StoreFailed:     http.StatusServiceUnavailable,
}

// toAPIError classifies any error for the wire: the API's own (decoding,
// media types, client certificates), echo's (routing, body limit), and
// the core's by their kind.
func toAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		msg := http.StatusText(he.Code)
		if s, ok := he.Message.(string); ok && s != "" {
			msg = s
		}
		return &apiError{Status: he.Code, Code: codeForStatus(he.Code), Message: msg, Err: err}
	}
	e := appliance.AsError(err)
	status, ok := statusOf[e.Kind]
	if !ok {
		status = http.StatusInternalServerError
	}
	return &apiError{Status: status, Code: e.Code, Message: e.Message, RetryAfter: retrySeconds(e.RetryAfter), Err: err}
}

// retrySeconds rounds a retry delay up to whole seconds, as Retry-After
// takes it.
func retrySeconds(d time.Duration) int {
	return int((d + time.Second - 1) / time.Second)
}

func retryAfter(d time.Duration) string { return strconv.Itoa(retrySeconds(d)) }

func codeForStatus(status int) string {
	switch status {
	case http.StatusNotFound:
		return "not-found"
	case http.StatusMethodNotAllowed:
		return "method-not-allowed"
	case http.StatusRequestEntityTooLarge:
		return "body-too-large"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusUnsupportedMediaType:
		return "unsupported-media-type"
	case http.StatusTooManyRequests:
		return "rate-limited"
	}
	if status >= 500 {
		return "internal"
	}
	return "bad-request"
}

var errClientCertRequired = &apiError{Status: http.StatusForbidden, Code: "client-certificate-required",
	Message: "officer endpoints need a client certificate from the configured CA"}

var errSigningTLSRequired = &apiError{Status: http.StatusForbidden, Code: "tls-required",
	Message: "a signing client's key is a secret: use HTTPS (plain HTTP is accepted from this machine only)"}

var errTLSRequired = &apiError{Status: http.StatusForbidden, Code: "tls-required",
	Message: "officer requests carry credentials and key material: use HTTPS (plain HTTP is accepted from this machine only)"}

func unsupportedMediaType(msg string) *apiError {
	return &apiError{Status: http.StatusUnsupportedMediaType, Code: "unsupported-media-type", Message: msg}
}

func badRequest(code, msg string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: code, Message: msg}
}

// writeJSON writes v with Content-Type exactly "application/json".
func writeJSON(c echo.Context, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	// The whole body is at hand: say its length rather than have net/http
	// chunk what does not fit its buffer.
	h.Set(echo.HeaderContentLength, strconv.Itoa(len(b)))
	c.Response().WriteHeader(status)
	_, err = c.Response().Write(b)
	return err
}

// errorHandler is echo's HTTPErrorHandler: every error leaves as JSON with
// the right status; internal details go to the log, not to the caller.
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	ae := toAPIError(err)
	if ae.Status >= 500 {
		s.log.Error("request failed", "route", c.Path(), "status", ae.Status, "code", ae.Code, "err", err)
	}
	if ae.RetryAfter > 0 {
		c.Response().Header().Set("Retry-After", strconv.Itoa(ae.RetryAfter))
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(ae.Status)
		return
	}
	body := wire.ErrorBody{Code: ae.Code, Message: ae.Message, Error: wire.ErrorDetail{Code: ae.Code, Message: ae.Message}}
	if werr := writeJSON(c, ae.Status, body); werr != nil {
		s.log.Warn("writing error response", "err", werr)
	}
}
