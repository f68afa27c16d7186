package appliance

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/keyrack/keyrack/appliance/assertion"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/hsm"
	"github.com/keyrack/keyrack/policy"
)

// ErrorKind is what sort of failure an error is. The core decides the
// kind; a front end (the HTTP API) decides how to say it.
type ErrorKind int

const (
	// Internal is the appliance's own failure; its cause is logged, never
	// shown.
	Internal ErrorKind = iota
	// BadInput is a request that is malformed or whose content is refused
	// as input.
	BadInput
	// Unauthenticated is a missing, unknown or wrong credential.
	Unauthenticated
	// Refused is a request refused by a rule: a scope, a key's roles or
	// state, a credential of the wrong kind.
	Refused
	// NotFound is a request for something that does not exist.
	NotFound
	// Conflict is a request that contradicts the state it met.
	Conflict
	// RateLimited is a source or a name throttled after failed
	// authentications.
	RateLimited
	// Unavailable is a request that may succeed later: the token is away,
	// or another request holds what this one needs.
	Unavailable
	// Overloaded is a request refused because the appliance is at its
	// limit.
	Overloaded
	// StoreFailed is the store refusing writes until an operator restarts
	// the daemon: retrying will not help.
	StoreFailed
)

// Error is a failure as the core reports it: a kind, a stable code, a
// message for the caller (never a secret), and when it is worth retrying.
type Error struct {
	Kind       ErrorKind
	Code       string
	Message    string
	RetryAfter time.Duration // > 0: the caller may retry after this long
	Err        error
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }
func (e *Error) Unwrap() error { return e.Err }

func badInput(code, msg string) *Error { return &Error{Kind: BadInput, Code: code, Message: msg} }

func refused(code, msg string) *Error { return &Error{Kind: Refused, Code: code, Message: msg} }

func conflict(code, msg string) *Error { return &Error{Kind: Conflict, Code: code, Message: msg} }

// errInternal is the only thing a caller learns of an internal failure.
const errInternal = "internal error"

// AsError classifies any error the core returns: the sentinel errors of
// the token, the store and the assertion package get their kind and a
// message for the caller; anything unknown is Internal.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var refusal *policy.Refusal
	if errors.As(err, &refusal) {
		return &Error{Kind: Refused, Code: "refused", Message: refusal.Error(), Err: err}
	}
	switch {
	case errors.Is(err, assertion.ErrSelfCheck):
		return &Error{Kind: Internal, Code: "internal", Message: errInternal, Err: err}
	case errors.Is(err, hsm.ErrTokenUnavailable), errors.Is(err, hsm.ErrPINIncorrect), errors.Is(err, hsm.ErrClosed):
		return &Error{Kind: Unavailable, Code: "token-unavailable",
			Message: "the signing token is unavailable; retry later", RetryAfter: 5 * time.Second, Err: err}
	case errors.Is(err, hsm.ErrBusy), errors.Is(err, context.DeadlineExceeded):
		return &Error{Kind: Overloaded, Code: "overloaded",
			Message: "the appliance is at capacity; retry later", RetryAfter: time.Second, Err: err}
	case errors.Is(err, hsm.ErrKeyNotFound):
		return &Error{Kind: NotFound, Code: "key-not-found", Message: "no such key", Err: err}
	case errors.Is(err, hsm.ErrKeyExists):
		return &Error{Kind: Conflict, Code: "key-exists",
			Message: "a key with this name or id already exists; keyrack never replaces keys", Err: err}
	case errors.Is(err, store.ErrFailed):
		// Not the request's fault and not over by itself: no RetryAfter.
		// The cause (a file and an errno) is for the operator, in the log
		// and in the health check, not for the caller.
		return &Error{Kind: StoreFailed, Code: "store-failed",
			Message: "the appliance cannot record anything durably and has stopped signing; it needs an operator", Err: err}
	case errors.Is(err, store.ErrNotFound):
		return &Error{Kind: NotFound, Code: "not-found", Message: trimPrefix(err.Error()), Err: err}
	case errors.Is(err, store.ErrExists), errors.Is(err, store.ErrConflict):
		return &Error{Kind: Conflict, Code: "conflict", Message: trimPrefix(err.Error()), Err: err}
	case errors.Is(err, hsm.ErrBadWrappedKey):
		return &Error{Kind: BadInput, Code: "bad-wrapped-key",
			Message: "the wrapped key does not unwrap under this appliance's import key (wrapped for another appliance, truncated or corrupted)", Err: err}
	case errors.Is(err, hsm.ErrKeyTooSmall):
		return &Error{Kind: BadInput, Code: "key-too-small", Message: trimPrefix(err.Error()), Err: err}
	case errors.Is(err, hsm.ErrUnsupported):
		return &Error{Kind: BadInput, Code: "unsupported", Message: trimPrefix(err.Error()), Err: err}
	case errors.Is(err, hsm.ErrInvalidArgument):
		return &Error{Kind: BadInput, Code: "invalid-argument", Message: err.Error(), Err: err}
	}
	return &Error{Kind: Internal, Code: "internal", Message: errInternal, Err: err}
}

// trimPrefix drops the package prefixes of an error text for callers.
func trimPrefix(s string) string {
	for _, p := range []string{"store: ", "hsm: "} {
		s = strings.ReplaceAll(s, p, "")
	}
	return s
}
