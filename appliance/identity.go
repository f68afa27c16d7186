package appliance

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/keyrack/keyrack/appliance/officerkey"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
)

// An officer is the public key they made and keep (package officerkey).
// They log in by signing a single-use challenge and get a session of at
// most SessionTTL; they approve a proposal by signing its canonical
// content. The appliance keeps public keys, signatures and the hashes of
// session tokens: no officer secret.

// SessionTTL is how long an officer session lasts.
const SessionTTL = 15 * time.Minute

// challengeTTL is how long a login challenge may be answered.
const challengeTTL = time.Minute

// maxChallenges bounds the login challenges outstanding at once (each
// lives challengeTTL): far more than officers ever need. challengesPerSource
// bounds what one address may ask for in that time, so that one caller
// cannot take them all.
const (
	maxChallenges       = 1000
	challengesPerSource = 120
)

var errTooManyChallenges = &Error{Kind: Overloaded, Code: "overloaded", RetryAfter: challengeTTL,
	Message: "too many login challenges outstanding; retry in a minute"}

// sessionPrefix starts every officer session token.
const sessionPrefix = "krk_s_"

// applianceIDSetting names the store's random id: the appliance (or the
// appliances sharing one store) that signatures are made for, so that an
// approval or a login made for another deployment with the same officers
// is never accepted here.
const applianceIDSetting = "appliance_id"

func ensureApplianceID(ctx context.Context, db *store.DB) (string, error) {
	var id string
	err := db.Update(ctx, func(tx *store.Tx) error {
		var err error
		id, err = tx.Setting(applianceIDSetting)
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		id = hex.EncodeToString(b)
		if err := tx.SetSetting(applianceIDSetting, id); err != nil {
			return err
		}
		_, err = tx.Audit("system", "appliance.id", id, "ok", nil)
		return err
	})
	return id, err
}

// officerKey parses an officer's recorded public key.
func officerKey(o store.Officer) (ssh.PublicKey, error) {
	if o.PublicKey == "" {
		return nil, fmt.Errorf("officer %q has no key", o.Name)
	}
	pub, err := officerkey.ParsePublicKey([]byte(o.PublicKey))
	if err != nil {
		return nil, fmt.Errorf("officer %q: recorded key: %w", o.Name, err)
	}
	return pub, nil
}

// holds says whether o's recorded key is pub, whatever the comments.
func holds(o store.Officer, pub ssh.PublicKey) bool {
	rec, err := officerKey(o)
	return err == nil && bytes.Equal(rec.Marshal(), pub.Marshal())
}

// parseOfficerKey reads a public key an officer brings, for the caller.
func parseOfficerKey(text string) (ssh.PublicKey, error) {
	pub, err := officerkey.ParsePublicKey([]byte(text))
	if err != nil {
		return nil, badInput("invalid-key", err.Error())
	}
	return pub, nil
}

// checkKeyUnused refuses a key another officer already has: one person
// holding two officers' keys would meet a quorum of two alone.
func checkKeyUnused(tx *store.Tx, pub ssh.PublicKey, except string) error {
	os, err := tx.ListOfficers()
	if err != nil {
		return err
	}
	for _, o := range os {
		if o.Name != except && holds(o, pub) {
			return conflict("key-in-use", fmt.Sprintf("officer %q already has key %s: each officer needs a key of their own", o.Name, officerkey.Fingerprint(pub)))
		}
	}
	return nil
}

// officerByKey names the officer holding pub, or "" (whose login then
// fails like any other: the answer does not tell which keys exist).
func (a *Appliance) officerByKey(ctx context.Context, pub ssh.PublicKey) (string, error) {
	var os []store.Officer
	if err := a.db.View(ctx, func(tx *store.Tx) error {
		var err error
		os, err = tx.ListOfficers()
		return err
	}); err != nil {
		return "", err
	}
	for _, o := range os {
		if o.Active() && holds(o, pub) {
			return o.Name, nil
		}
	}
	return "", nil
}

// loginContent is what an officer signs to log in.
type loginContent struct {
	Appliance string    `json:"appliance"`
	Challenge string    `json:"challenge"`
	ExpiresAt time.Time `json:"expires-at"`
	ID        string    `json:"id"`
	Officer   string    `json:"officer"`
}

func (c loginContent) bytes() []byte {
	b, _ := json.Marshal(c)
	return b
}

var errLoginFailed = &Error{Kind: Unauthenticated, Code: "login-failed",
	Message: "login failed: unknown or removed officer, expired or used challenge, or a signature that does not verify with the officer's key"}

// LoginChallenge gives officer a single-use challenge to sign. An unknown
// or removed officer gets the same answer as a known one, and fails at
// Login: the answer does not tell which names exist.
func (a *Appliance) LoginChallenge(ctx context.Context, req wire.LoginRequest, source string) (wire.LoginChallenge, error) {
	officer := req.Officer
	if officer == "" {
		pub, err := parseOfficerKey(req.PublicKey)
		if err != nil {
			return wire.LoginChallenge{}, badInput("invalid-login", "name the officer, or give their public key")
		}
		if officer, err = a.officerByKey(ctx, pub); err != nil {
			return wire.LoginChallenge{}, err
		}
	} else if err := validName("officer", officer); err != nil {
		return wire.LoginChallenge{}, err
	}
	now := time.Now()
	if d := a.limiter.blocked(now, sourceKey(source)); d > 0 {
		a.metrics.refusals.WithLabelValues("auth-rate").Inc()
		return wire.LoginChallenge{}, rateLimited(d)
	}
	if d := a.challenges.blocked(now, sourceKey(source)); d > 0 {
		a.metrics.refusals.WithLabelValues("auth-rate").Inc()
		return wire.LoginChallenge{}, &Error{Kind: RateLimited, Code: "rate-limited", RetryAfter: d,
			Message: fmt.Sprintf("too many login challenges from this address (%d a minute at most); retry shortly", challengesPerSource)}
	}
	a.challenges.fail(now, sourceKey(source))
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return wire.LoginChallenge{}, err
	}
	c := loginContent{Appliance: a.id, Challenge: base64.RawURLEncoding.EncodeToString(raw), ID: newProposalID() + newProposalID(),
		Officer: officer, ExpiresAt: time.Now().Add(challengeTTL).UTC().Truncate(time.Microsecond)}
	err := a.db.UpdateUnsynced(ctx, func(tx *store.Tx) error {
		// Asking for challenges needs no credential: their number is
		// bounded, so that asking cannot fill the store.
		n, err := tx.CountChallenges()
		if err != nil {
			return err
		}
		if n >= maxChallenges {
			return errTooManyChallenges
		}
		return tx.InsertChallenge(c.ID, c.Officer, c.Challenge, c.ExpiresAt)
	})
	if err != nil {
		return wire.LoginChallenge{}, err
	}
	return wire.LoginChallenge{ID: c.ID, Content: string(c.bytes()), ExpiresAt: c.ExpiresAt}, nil
}

// validCertSHA256 checks a client certificate's fingerprint as officers
// give it: SHA-256 in hex, or nothing.
func validCertSHA256(s string) error {
	if s == "" {
		return nil
	}
	if b, err := hex.DecodeString(s); err != nil || len(b) != sha256.Size || s != strings.ToLower(s) {
		return badInput("invalid-certificate", "client-cert-sha256 is the SHA-256 of the certificate's DER, 64 lower-case hex digits (openssl x509 -noout -fingerprint -sha256, without colons)")
	}
	return nil
}

// certMatches says whether the client certificate an officer presented
// (certSHA256, "" for none) is acceptable for o: where officers' client
// certificates are required, it must be the one bound to o at enrolment.
func (a *Appliance) certMatches(o store.Officer, certSHA256 string) bool {
	if !a.cfg.TLS.OfficerClientCert {
		return true
	}
	return o.CertSHA256 != "" && o.CertSHA256 == certSHA256
}

// Login checks an officer's signature over their challenge and opens a
// session. A challenge is used once, whatever the outcome. certSHA256 is
// the client certificate the connection presented ("" for none).
func (a *Appliance) Login(ctx context.Context, ans wire.LoginAnswer, source, certSHA256 string) (wire.Session, error) {
	now := time.Now()
	var sess wire.Session
	var failure string
	err := a.db.Update(ctx, func(tx *store.Tx) error {
		officer, challenge, expires, err := tx.TakeChallenge(ans.ID)
		if errors.Is(err, store.ErrNotFound) {
			failure = "unknown or used challenge"
			return nil
		}
		if err != nil {
			return err
		}
		sess.Officer = officer
		if d := a.limiter.blocked(now, sourceKey(source)); d > 0 {
			a.metrics.refusals.WithLabelValues("auth-rate").Inc()
			return rateLimited(d)
		}
		o, err := tx.GetOfficerByName(officer)
		switch {
		case errors.Is(err, store.ErrNotFound):
			failure = "unknown officer"
			return nil
		case err != nil:
			return err
		case !o.Active():
			failure = "officer removed or without a key"
			return nil
		case !a.certMatches(o, certSHA256):
			failure = "not the client certificate bound to the officer"
			return nil
		case now.After(expires):
			failure = "challenge expired"
			return nil
		}
		pub, err := officerKey(o)
		if err != nil {
			return err
		}
		content := loginContent{Appliance: a.id, Challenge: challenge, ExpiresAt: expires, ID: ans.ID, Officer: officer}
		if err := officerkey.Verify(pub, officerkey.DomainLogin, content.bytes(), ans.Signature); err != nil {
			failure = "signature does not verify with the officer's key"
			return nil
		}
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return err
		}
		sess.Token = sessionPrefix + hex.EncodeToString(raw)
		clear(raw)
		sess.ExpiresAt = now.Add(SessionTTL).UTC().Truncate(time.Second)
		h := sha256.Sum256([]byte(sess.Token))
		if err := tx.InsertSession(h[:], store.Session{Officer: officer, CertSHA256: certSHA256, Expires: sess.ExpiresAt}); err != nil {
			return err
		}
		_, err = tx.Audit("officer:"+officer, "officer.login", officer, "ok",
			map[string]any{"fingerprint": officerkey.Fingerprint(pub), "source": source, "expires": sess.ExpiresAt})
		return err
	})
	if err != nil {
		return wire.Session{}, err
	}
	if failure != "" {
		a.limiter.fail(now, sourceKey(source))
		a.loginFailed(ctx, source, sess.Officer, failure)
		return wire.Session{}, errLoginFailed
	}
	return sess, nil
}

func defaultName(n string) string {
	if n == "" {
		return "unknown"
	}
	return n
}

var errUnauthenticated = &Error{Kind: Unauthenticated, Code: "unauthorized",
	Message: "missing, expired or invalid officer session (log in with your officer key: Authorization: Bearer krk_s_...)"}

// AuthenticateOfficer checks an officer session token presented from
// source (the peer's address, never a header the client chose: failed
// attempts are counted against it) over a connection with client
// certificate certSHA256 ("" for none), and returns the officer's name. A
// session opened with a client certificate is good with that certificate
// only.
func (a *Appliance) AuthenticateOfficer(ctx context.Context, token, source, certSHA256 string) (string, error) {
	now := time.Now()
	if d := a.limiter.blocked(now, sourceKey(source)); d > 0 {
		a.metrics.refusals.WithLabelValues("auth-rate").Inc()
		return "", rateLimited(d)
	}
	if strings.HasPrefix(token, clientPrefix) {
		return "", refused("forbidden", "factory API keys cannot be used on officer endpoints")
	}
	rest, ok := strings.CutPrefix(token, sessionPrefix)
	if !ok || len(rest) != 64 {
		if token != "" {
			a.limiter.fail(now, sourceKey(source))
			a.loginFailed(ctx, source, "", "malformed session token")
		}
		return "", errUnauthenticated
	}
	h := sha256.Sum256([]byte(token))
	var officer string
	err := a.db.View(ctx, func(tx *store.Tx) error {
		s, err := tx.GetSession(h[:])
		if err != nil {
			return err
		}
		if now.After(s.Expires) || s.CertSHA256 != certSHA256 {
			return store.ErrNotFound
		}
		o, err := tx.GetOfficerByName(s.Officer)
		if err != nil {
			return err
		}
		if !o.Active() || !a.certMatches(o, certSHA256) {
			return store.ErrNotFound
		}
		officer = s.Officer
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		a.limiter.fail(now, sourceKey(source))
		a.loginFailed(ctx, source, "", "unknown, expired or ended session, or another client certificate")
		return "", errUnauthenticated
	}
	if err != nil {
		return "", err
	}
	return officer, nil
}

// proposalContent is the canonical content of a proposal: what every
// approval signs. It is made from the proposal's record, so editing any
// of its fields in the store changes it and voids every signature.
type proposalContent struct {
	Appliance string         `json:"appliance"`
	Created   time.Time      `json:"created"`
	Expires   time.Time      `json:"expires"`
	ID        string         `json:"id"`
	Kind      string         `json:"kind"`
	Params    map[string]any `json:"params"`
	Proposer  string         `json:"proposer"`
	Summary   string         `json:"summary"`
}

// contentOf makes p's canonical content. A wrapped blob is named by the
// SHA-256 of its bytes (what `sha256sum brand.blob` prints), not carried.
func (a *Appliance) contentOf(p store.Proposal) (string, error) {
	params := map[string]any{}
	if err := json.Unmarshal([]byte(p.Payload), &params); err != nil {
		return "", fmt.Errorf("proposal %s: payload: %w", p.ID, err)
	}
	if b64, ok := params["blob"].(string); ok {
		blob, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return "", fmt.Errorf("proposal %s: blob: %w", p.ID, err)
		}
		sum := sha256.Sum256(blob)
		delete(params, "blob")
		params["blob-sha256"] = hex.EncodeToString(sum[:])
		params["blob-bytes"] = len(blob)
	}
	b, err := json.Marshal(proposalContent{Appliance: a.id, Created: p.CreatedAt.UTC(), Expires: p.ExpiresAt.UTC(), ID: p.ID,
		Kind: p.Kind, Params: params, Proposer: p.Proposer, Summary: p.Summary})
	return string(b), err
}

var errContentChanged = &Error{Kind: Conflict, Code: "content-changed",
	Message: "the proposal on record is not what officers signed (its record was changed); it cannot be carried out"}

// validApprovals counts the approvals of p that hold now: by an officer
// active at this moment, with a signature by that officer's current key
// over p's content as made again from its record. It is what a quorum is
// counted from, in the transaction that acts on it.
func (a *Appliance) validApprovals(tx *store.Tx, p store.Proposal) (int, error) {
	content, err := a.contentOf(p)
	if err != nil {
		return 0, err
	}
	if content != p.Content {
		return 0, errContentChanged
	}
	n := 0
	seen := map[string]bool{}
	for _, ap := range p.Approvals {
		if seen[ap.Officer] {
			continue
		}
		o, err := tx.GetOfficerByName(ap.Officer)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return 0, err
		}
		if !o.Active() {
			continue
		}
		pub, err := officerKey(o)
		if err != nil {
			return 0, err
		}
		if officerkey.Verify(pub, officerkey.DomainApproval, []byte(content), ap.Signature) != nil {
			continue
		}
		seen[ap.Officer] = true
		n++
	}
	return n, nil
}

// auditRefusal records in the audit chain that officer's request (action
// on subject) was refused, when *errp says it was: the request's own
// fault (bad input, a rule, a conflict, nothing there), not the
// appliance's. Deferred by every officer-side entry point.
func (a *Appliance) auditRefusal(ctx context.Context, officer, action, subject string, errp *error) {
	if *errp == nil {
		return
	}
	switch e := AsError(*errp); e.Kind {
	case BadInput, Refused, Conflict, NotFound:
		a.refusal(ctx, "officer:"+officer, action, subject, e.Message, "")
	}
}

// refusal records an officer-side refusal in the audit chain: who tried
// what and why it was refused. (Failed logins from one source are also
// throttled by the limiter, so they cannot flood the chain faster than
// the limit allows.)
func (a *Appliance) refusal(ctx context.Context, actor, action, subject, why, source string) {
	details := map[string]any{}
	if source != "" {
		details["source"] = source
	}
	err := a.db.Update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		_, err := tx.Audit(actor, action, subject, "refused: "+why, details)
		return err
	})
	if err != nil {
		a.log.Warn("auditing a refusal", "action", action, "err", err)
	}
}
