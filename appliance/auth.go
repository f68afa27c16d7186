package appliance

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/keyrack/keyrack/appliance/store"
)

// Credentials are "krk_<kind>_<name>_<64 hex>": the prefix tells an officer
// credential from a factory API key at a glance (and lets the appliance
// refuse an API key on an officer endpoint with a useful message); the name
// finds the record; 256 random bits make a slow hash pointless, so the store
// keeps SHA-256 of the whole credential and compares in constant time.
const (
	officerPrefix = "krk_o_"
	clientPrefix  = "krk_c_"
)

// namePattern is what officer and client names may look like: they appear
// in credentials, audit events and URLs.
var namePattern = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

func validName(kind, name string) error {
	if !namePattern.MatchString(name) {
		return badRequest("invalid-name", fmt.Sprintf("%s name %q: use 1-32 characters a-z, 0-9 and '-', starting with a letter", kind, name))
	}
	return nil
}

func newCredential(prefix, name string) (token string, hash []byte, err error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", nil, err
	}
	token = prefix + name + "_" + hex.EncodeToString(raw)
	clear(raw)
	return token, hashCredential(token), nil
}

func hashCredential(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// credentialName returns the name inside a credential of the given kind.
func credentialName(prefix, token string) (string, bool) {
	rest, ok := strings.CutPrefix(token, prefix)
	if !ok {
		return "", false
	}
	i := strings.LastIndexByte(rest, '_')
	if i <= 0 || len(rest)-i-1 != 64 {
		return "", false
	}
	name := rest[:i]
	return name, namePattern.MatchString(name)
}

func credentialMatches(token string, hash []byte) bool {
	return subtle.ConstantTimeCompare(hashCredential(token), hash) == 1
}

var errUnauthenticated = &APIError{Status: http.StatusUnauthorized, Code: "unauthorized",
	Message: "missing or invalid officer credential (Authorization: Bearer krk_o_...)"}

// officerKey is the echo context key of the authenticated officer.
const officerKey = "keyrack.officer"

// requireOfficer authenticates officer endpoints.
func (s *Server) requireOfficer(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.cfg.TLS.OfficerClientCert {
			if st := c.Request().TLS; st == nil || len(st.VerifiedChains) == 0 {
				return &APIError{Status: http.StatusForbidden, Code: "client-certificate-required",
					Message: "officer endpoints need a client certificate from the configured CA"}
			}
		}
		token, ok := strings.CutPrefix(c.Request().Header.Get(echo.HeaderAuthorization), "Bearer ")
		if !ok || token == "" {
			if d := s.limiter.blocked(time.Now(), "addr:"+c.RealIP()); d > 0 {
				return rateLimited(d)
			}
			return errUnauthenticated
		}
		if strings.HasPrefix(token, clientPrefix) {
			return &APIError{Status: http.StatusForbidden, Code: "forbidden",
				Message: "factory API keys cannot be used on officer endpoints"}
		}
		name, err := s.authenticate(c, officerPrefix, token, errUnauthenticated, func(ctx context.Context, name string) ([]byte, bool, error) {
			var o store.Officer
			err := s.db.View(ctx, func(tx *store.Tx) error {
				var err error
				o, err = tx.GetOfficerByName(name)
				return err
			})
			return o.SecretHash, o.RevokedAt != nil, err
		})
		if err != nil {
			return err
		}
		c.Set(officerKey, name)
		return next(c)
	}
}

// authenticate checks a credential of the kind prefix and returns its
// name. An unknown name, a revoked credential and a wrong secret all give
// fail, after the same hash and comparison, so that answers do not tell
// which. (An API client's record may come from the cache, so a known name
// can be answered a few microseconds sooner than an unknown one: that
// tells only that the name exists, which its credentials' prefix and the
// audit log do not keep secret either; the secret part is 256 random
// bits.)
func (s *Server) authenticate(c echo.Context, prefix, token string, fail error, lookup func(ctx context.Context, name string) (hash []byte, revoked bool, err error)) (string, error) {
	name, ok := credentialName(prefix, token)
	keys := []string{"addr:" + c.RealIP(), "name:" + prefix + name}
	now := time.Now()
	if d := s.limiter.blocked(now, keys...); d > 0 {
		s.metrics.refusals.WithLabelValues("auth-rate").Inc()
		return "", rateLimited(d)
	}
	if !ok {
		s.limiter.fail(now, keys[0])
		return "", fail
	}
	hash, revoked, err := lookup(c.Request().Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		hash, err = make([]byte, sha256.Size), nil
		revoked = true
	}
	if err != nil {
		return "", err
	}
	if !credentialMatches(token, hash) || revoked {
		s.limiter.fail(now, keys...)
		return "", fail
	}
	return name, nil
}

func officerOf(c echo.Context) string {
	name, _ := c.Get(officerKey).(string)
	return name
}

func badRequest(code, msg string) *APIError {
	return &APIError{Status: http.StatusBadRequest, Code: code, Message: msg}
}
