package hsm

import (
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// Sentinel errors. Callers test them with errors.Is and map them to their
// own answers (for the HTTP API: 404, 409, 503 ...).
var (
	ErrKeyNotFound      = errors.New("key not found")
	ErrKeyExists        = errors.New("a key with this label or id already exists")
	ErrTokenNotFound    = errors.New("token not found")
	ErrTokenExists      = errors.New("a token with this label already exists")
	ErrTokenUnavailable = errors.New("token unavailable")
	ErrBusy             = errors.New("all token sessions are busy")
	ErrPINIncorrect     = errors.New("token PIN incorrect or locked")
	ErrPINSource        = errors.New("token PIN not available")
	ErrClosed           = errors.New("token module closed")
	ErrAlreadyOpen      = errors.New("PKCS#11 module already open in this process")
	ErrUnsupported      = errors.New("unsupported by keyrack")
	ErrInvalidArgument  = errors.New("invalid argument")
)

// Error is a failed PKCS#11 call. It names the operation and the CKR code and
// unwraps both to the sentinel that classifies it and to the pkcs11.Error.
type Error struct {
	Op   string
	Code uint
	kind error
}

func (e *Error) Error() string {
	name := pkcs11.Error(e.Code).Error()
	if e.kind != nil {
		return fmt.Sprintf("hsm: %s: %s (%v)", e.Op, e.kind, name)
	}
	return fmt.Sprintf("hsm: %s: %v", e.Op, name)
}

// Unwrap lets errors.Is find both the classifying sentinel and the raw code.
func (e *Error) Unwrap() []error {
	errs := []error{pkcs11.Error(e.Code)}
	if e.kind != nil {
		errs = append(errs, e.kind)
	}
	return errs
}

// ckr extracts the CKR code from a miekg/pkcs11 error.
func ckr(err error) (uint, bool) {
	var pe pkcs11.Error
	if errors.As(err, &pe) {
		return uint(pe), true
	}
	return 0, false
}

// needsRecovery reports whether err means the token dropped our sessions,
// handles or login, so that re-opening everything may cure it.
func needsRecovery(err error) bool {
	code, ok := ckr(err)
	if !ok {
		return false
	}
	switch code {
	case pkcs11.CKR_SESSION_HANDLE_INVALID,
		pkcs11.CKR_SESSION_CLOSED,
		pkcs11.CKR_OBJECT_HANDLE_INVALID,
		pkcs11.CKR_KEY_HANDLE_INVALID,
		pkcs11.CKR_USER_NOT_LOGGED_IN,
		pkcs11.CKR_DEVICE_ERROR,
		pkcs11.CKR_DEVICE_REMOVED,
		pkcs11.CKR_TOKEN_NOT_PRESENT,
		pkcs11.CKR_TOKEN_NOT_RECOGNIZED,
		pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED,
		pkcs11.CKR_GENERAL_ERROR:
		return true
	}
	return false
}

// wrapCKR turns a raw PKCS#11 failure into an *Error with the sentinel that
// fits it. Errors that are already ours pass through unchanged.
func wrapCKR(op string, err error) error {
	if err == nil {
		return nil
	}
	code, ok := ckr(err)
	if !ok {
		return fmt.Errorf("hsm: %s: %w", op, err)
	}
	var kind error
	switch {
	case code == pkcs11.CKR_PIN_INCORRECT || code == pkcs11.CKR_PIN_LOCKED ||
		code == pkcs11.CKR_PIN_EXPIRED || code == pkcs11.CKR_PIN_LEN_RANGE:
		kind = ErrPINIncorrect
	case needsRecovery(err):
		kind = ErrTokenUnavailable
	case code == pkcs11.CKR_MECHANISM_INVALID || code == pkcs11.CKR_MECHANISM_PARAM_INVALID ||
		code == pkcs11.CKR_KEY_TYPE_INCONSISTENT || code == pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED:
		kind = ErrUnsupported
	}
	return &Error{Op: op, Code: code, kind: kind}
}
