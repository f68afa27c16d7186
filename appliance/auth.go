package appliance

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/keyrack/keyrack/appliance/store"
)

// API keys are "krk_c_<name>_<64 hex>": the prefix tells a factory API key
// from an officer's session token (krk_s_) at a glance, and lets the
// appliance refuse one where the other belongs with a useful message; the
// name finds the record; 256 random bits make a slow hash pointless, so
// the store keeps SHA-256 of the whole credential and compares in constant
// time. Officers have no such credential: they are keys (identity.go).
const (
	clientPrefix = "krk_c_"
	// officerPrefix is what officer credentials looked like before
	// officers had keys: refused everywhere now, with a message.
	officerPrefix = "krk_o_"
)

// namePattern is what officer and client names may look like: they appear
// in credentials, audit events and URLs.
var namePattern = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

func validName(kind, name string) error {
	if !namePattern.MatchString(name) {
		return badInput("invalid-name", fmt.Sprintf("%s name %q: use 1-32 characters a-z, 0-9 and '-', starting with a letter", kind, name))
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

// authenticate checks a credential of the kind prefix and returns its
// name. An unknown name, a revoked credential and a wrong secret all give
// fail, after the same hash and comparison, so that answers do not tell
// which. (An API client's record may come from the cache, so a known name
// can be answered a few microseconds sooner than an unknown one: that
// tells only that the name exists, which its credentials' prefix and the
// audit log do not keep secret either; the secret part is 256 random
// bits.)
func (a *Appliance) authenticate(ctx context.Context, source, prefix, token string, fail error, lookup func(ctx context.Context, name string) (hash []byte, revoked bool, err error)) (string, error) {
	name, ok := credentialName(prefix, token)
	// Throttled by source only: counting failures against the name in a
	// credential would let anyone who knows a name (API keys are public
	// in gadget images) lock out its real holder; the secret is 256
	// random bits, so guessing it from many sources gains nothing.
	src := sourceKey(source)
	now := time.Now()
	if d := a.limiter.blocked(now, src); d > 0 {
		a.metrics.refusals.WithLabelValues("auth-rate").Inc()
		return "", rateLimited(d)
	}
	if !ok {
		a.limiter.fail(now, src)
		return "", fail
	}
	hash, revoked, err := lookup(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		hash, err = make([]byte, sha256.Size), nil
		revoked = true
	}
	if err != nil {
		return "", err
	}
	if !credentialMatches(token, hash) || revoked {
		a.limiter.fail(now, src)
		return "", fail
	}
	return name, nil
}
