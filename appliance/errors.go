package appliance

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/keyrack/keyrack/appliance/assertion"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/hsm"
	"github.com/keyrack/keyrack/policy"
)

// APIError is an error with the status and the stable code the API
// answers with. Message is shown to the caller: it must never carry a
// secret.
type APIError struct {
	Status     int
	Code       string
	Message    string
	RetryAfter int // seconds; sent as Retry-After when > 0
	Err        error
}

func (e *APIError) Error() string { return e.Code + ": " + e.Message }
func (e *APIError) Unwrap() error { return e.Err }

// errorBody is the JSON error shape: snapd shows the message to the user
// only when Content-Type is exactly application/json.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// toAPIError classifies any error for the wire.
func toAPIError(err error) *APIError {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		msg := http.StatusText(he.Code)
		if s, ok := he.Message.(string); ok && s != "" {
			msg = s
		}
		return &APIError{Status: he.Code, Code: codeForStatus(he.Code), Message: msg, Err: err}
	}
	var refusal *policy.Refusal
	if errors.As(err, &refusal) {
		return &APIError{Status: http.StatusForbidden, Code: "refused", Message: refusal.Error(), Err: err}
	}
	switch {
	case errors.Is(err, assertion.ErrSelfCheck):
		return &APIError{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error", Err: err}
	case errors.Is(err, hsm.ErrTokenUnavailable), errors.Is(err, hsm.ErrPINIncorrect), errors.Is(err, hsm.ErrClosed):
		return &APIError{Status: http.StatusServiceUnavailable, Code: "token-unavailable",
			Message: "the signing token is unavailable; retry later", RetryAfter: 5, Err: err}
	case errors.Is(err, hsm.ErrBusy), errors.Is(err, context.DeadlineExceeded):
		return &APIError{Status: http.StatusServiceUnavailable, Code: "overloaded",
			Message: "the appliance is at capacity; retry later", RetryAfter: 1, Err: err}
	case errors.Is(err, hsm.ErrKeyNotFound):
		return &APIError{Status: http.StatusNotFound, Code: "key-not-found", Message: "no such key", Err: err}
	case errors.Is(err, hsm.ErrKeyExists):
		return &APIError{Status: http.StatusConflict, Code: "key-exists",
			Message: "a key with this name or id already exists; keyrack never replaces keys", Err: err}
	case errors.Is(err, store.ErrFailed):
		// Not the request's fault and not over by itself: no Retry-After.
		// The cause (a file and an errno) is for the operator, in the log
		// and in /v1/health, not for the caller.
		return &APIError{Status: http.StatusServiceUnavailable, Code: "store-failed",
			Message: "the appliance cannot record anything durably and has stopped signing; it needs an operator", Err: err}
	case errors.Is(err, store.ErrNotFound):
		return &APIError{Status: http.StatusNotFound, Code: "not-found", Message: trimPrefix(err.Error()), Err: err}
	case errors.Is(err, store.ErrExists), errors.Is(err, store.ErrConflict):
		return &APIError{Status: http.StatusConflict, Code: "conflict", Message: trimPrefix(err.Error()), Err: err}
	case errors.Is(err, hsm.ErrBadWrappedKey):
		return &APIError{Status: http.StatusBadRequest, Code: "bad-wrapped-key",
			Message: "the wrapped key does not unwrap under this appliance's import key (wrapped for another appliance, truncated or corrupted)", Err: err}
	case errors.Is(err, hsm.ErrKeyTooSmall):
		return &APIError{Status: http.StatusBadRequest, Code: "key-too-small", Message: trimPrefix(err.Error()), Err: err}
	case errors.Is(err, hsm.ErrUnsupported):
		return &APIError{Status: http.StatusBadRequest, Code: "unsupported", Message: trimPrefix(err.Error()), Err: err}
	case errors.Is(err, hsm.ErrInvalidArgument):
		return &APIError{Status: http.StatusBadRequest, Code: "invalid-argument", Message: err.Error(), Err: err}
	}
	return &APIError{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error", Err: err}
}

// trimPrefix drops the package prefixes of an error text for callers.
func trimPrefix(s string) string {
	for _, p := range []string{"store: ", "hsm: "} {
		s = strings.ReplaceAll(s, p, "")
	}
	return s
}

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
	var body errorBody
	body.Error.Code = ae.Code
	body.Error.Message = ae.Message
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(ae.Status)
		return
	}
	if werr := writeJSON(c, ae.Status, body); werr != nil {
		s.log.Warn("writing error response", "err", werr)
	}
}
