package appliance

import (
	"context"
	"fmt"
	"testing"

	"github.com/keyrack/keyrack/appliance/assertion"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/hsm"
)

// TestErrorKinds: how the core classifies what can go wrong; the API's
// TestErrorMapping turns kinds into statuses.
func TestErrorKinds(t *testing.T) {
	for _, tc := range []struct {
		err   error
		kind  ErrorKind
		retry bool
	}{
		{fmt.Errorf("x: %w", hsm.ErrTokenUnavailable), Unavailable, true},
		{fmt.Errorf("x: %w", hsm.ErrBusy), Overloaded, true},
		{context.DeadlineExceeded, Overloaded, true},
		{fmt.Errorf("x: %w", hsm.ErrKeyNotFound), NotFound, false},
		{fmt.Errorf("x: %w", hsm.ErrKeyExists), Conflict, false},
		{fmt.Errorf("x: %w", store.ErrFailed), StoreFailed, false},
		{fmt.Errorf("plain"), Internal, false},
		// What the signing services return when the assertion package
		// fails: the caller's bad input, a token gone, a self-check that
		// failed (the appliance's own fault).
		{signingError(fmt.Errorf("%w: %w", assertion.ErrSigning, hsm.ErrTokenUnavailable), "invalid-headers"), Unavailable, true},
		{signingError(fmt.Errorf("%w: x", assertion.ErrInvalidHeaders), "invalid-headers"), BadInput, false},
		{signingError(fmt.Errorf("%w: x", assertion.ErrSelfCheck), "invalid-headers"), Internal, false},
	} {
		e := AsError(tc.err)
		if e.Kind != tc.kind || (e.RetryAfter > 0) != tc.retry {
			t.Errorf("%v -> kind %d retry %v", tc.err, e.Kind, e.RetryAfter)
		}
		if e.Kind == Internal && e.Message != "internal error" {
			t.Errorf("an internal error leaks its cause: %q", e.Message)
		}
	}
}
