package store

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Officer is a security officer, known by the public key they made and
// keep. No officer secret is stored.
type Officer struct {
	ID   int64
	Name string
	// PublicKey is the officer's key in authorized_keys form; "" for an
	// officer enrolled before officers had keys, who can do nothing until
	// a key is bound (SetOfficerKey).
	PublicKey string
	// CertSHA256 is the SHA-256 (hex) of the TLS client certificate bound
	// to the officer at enrolment, or "".
	CertSHA256 string
	CreatedAt  time.Time
	RevokedAt  *time.Time
}

// Active says the officer may log in and approve: not removed, and
// holding a key.
func (o Officer) Active() bool { return o.RevokedAt == nil && o.PublicKey != "" }

// InsertOfficer adds an officer with their public key; a used name is
// ErrExists.
func (t *Tx) InsertOfficer(name, publicKey, certSHA256 string) (int64, error) {
	var id int64
	// secret_hash is what officers had before keys; it stays empty.
	err := t.queryRow(`INSERT INTO officers (name, secret_hash, public_key, cert_sha256, created_us) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING id`,
		name, []byte{}, publicKey, certSHA256, micros(t.now)).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("store: officer %q: %w", name, ErrExists)
	}
	if err != nil {
		return 0, fmt.Errorf("store: inserting officer: %w", err)
	}
	return id, nil
}

const officerCols = `id, name, public_key, cert_sha256, created_us, revoked_us`

func scanOfficer(row interface{ Scan(...any) error }) (Officer, error) {
	var o Officer
	var created int64
	var revoked sql.NullInt64
	if err := row.Scan(&o.ID, &o.Name, &o.PublicKey, &o.CertSHA256, &created, &revoked); err != nil {
		return Officer{}, err
	}
	o.CreatedAt, o.RevokedAt = fromMicros(created), timePtr(revoked)
	return o, nil
}

// GetOfficer returns an officer by id.
func (t *Tx) GetOfficer(id int64) (Officer, error) {
	o, err := scanOfficer(t.queryRow(`SELECT `+officerCols+` FROM officers WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Officer{}, fmt.Errorf("store: officer %d: %w", id, ErrNotFound)
	}
	return o, err
}

// GetOfficerByName returns an officer by name.
func (t *Tx) GetOfficerByName(name string) (Officer, error) {
	o, err := scanOfficer(t.queryRow(`SELECT `+officerCols+` FROM officers WHERE name = $1`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Officer{}, fmt.Errorf("store: officer %q: %w", name, ErrNotFound)
	}
	return o, err
}

// ListOfficers returns all officers, revoked ones included.
func (t *Tx) ListOfficers() ([]Officer, error) {
	rows, err := t.query(`SELECT ` + officerCols + ` FROM officers ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Officer
	for rows.Next() {
		o, err := scanOfficer(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// RevokeOfficer marks an active officer revoked.
func (t *Tx) RevokeOfficer(name string) error {
	res, err := t.exec(`UPDATE officers SET revoked_us = $1 WHERE name = $2 AND revoked_us IS NULL`, micros(t.now), name)
	return expectOne(res, err, "revoking officer "+name)
}

// CountActiveOfficers returns how many officers can approve: not revoked,
// and holding a key.
func (t *Tx) CountActiveOfficers() (int, error) {
	var n int
	err := t.queryRow(`SELECT count(*) FROM officers WHERE revoked_us IS NULL AND public_key <> ''`).Scan(&n)
	return n, err
}

// SetOfficerKey replaces an active officer's public key and bound client
// certificate.
func (t *Tx) SetOfficerKey(name, publicKey, certSHA256 string) error {
	res, err := t.exec(`UPDATE officers SET public_key = $1, cert_sha256 = $2 WHERE name = $3 AND revoked_us IS NULL`, publicKey, certSHA256, name)
	return expectOne(res, err, "setting the key of officer "+name)
}

// InsertChallenge records a login challenge for officer, usable once
// until expires.
func (t *Tx) InsertChallenge(id, officer, challenge string, expires time.Time) error {
	res, err := t.exec(`INSERT INTO officer_challenges (id, officer, challenge, expires_us) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
		id, officer, challenge, micros(expires))
	return inserted(res, err, "challenge "+id)
}

// CountChallenges returns how many login challenges are outstanding.
func (t *Tx) CountChallenges() (int, error) {
	var n int
	err := t.queryRow(`SELECT count(*) FROM officer_challenges`).Scan(&n)
	return n, err
}

// TakeChallenge removes a login challenge and returns its officer,
// challenge and expiry; a challenge is used once, whatever the outcome.
func (t *Tx) TakeChallenge(id string) (officer, challenge string, expires time.Time, err error) {
	var exp int64
	err = t.queryRow(`DELETE FROM officer_challenges WHERE id = $1 RETURNING officer, challenge, expires_us`, id).Scan(&officer, &challenge, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", time.Time{}, fmt.Errorf("store: challenge: %w", ErrNotFound)
	}
	return officer, challenge, fromMicros(exp), err
}

// Session is an officer session, found by the hash of its token.
type Session struct {
	Officer    string
	CertSHA256 string // the client certificate it was opened with, or ""
	Expires    time.Time
}

// InsertSession records an officer session by the hash of its token.
func (t *Tx) InsertSession(tokenHash []byte, s Session) error {
	res, err := t.exec(`INSERT INTO officer_sessions (token_hash, officer, cert_sha256, expires_us) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
		tokenHash, s.Officer, s.CertSHA256, micros(s.Expires))
	return inserted(res, err, "session")
}

// GetSession returns the session of a token's hash.
func (t *Tx) GetSession(tokenHash []byte) (Session, error) {
	var s Session
	var exp int64
	err := t.queryRow(`SELECT officer, cert_sha256, expires_us FROM officer_sessions WHERE token_hash = $1`, tokenHash).Scan(&s.Officer, &s.CertSHA256, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return Session{}, fmt.Errorf("store: session: %w", ErrNotFound)
	}
	s.Expires = fromMicros(exp)
	return s, err
}

// EndSessions ends every session of officer (removed, or with a new key).
func (t *Tx) EndSessions(officer string) error {
	_, err := t.exec(`DELETE FROM officer_sessions WHERE officer = $1`, officer)
	return err
}

// PurgeLogins deletes expired sessions and challenges.
func (t *Tx) PurgeLogins(now time.Time) error {
	if _, err := t.exec(`DELETE FROM officer_sessions WHERE expires_us < $1`, micros(now)); err != nil {
		return err
	}
	_, err := t.exec(`DELETE FROM officer_challenges WHERE expires_us < $1`, micros(now))
	return err
}

// Client is a factory API client with its scope.
type Client struct {
	ID     string
	Name   string
	Brand  string
	Models []string
	Types  []string
	// Kind is device-service or signing (schema version 4).
	Kind string
	// CertSHA256 is the SHA-256 (hex) of the TLS client certificate bound
	// to a signing client at creation, or "".
	CertSHA256 string
	// Limits is a signing client's limits on system-user and preseed, as
	// the core's JSON; "" for a device-service client.
	Limits     string
	SecretHash []byte
	CreatedAt  time.Time
	RevokedAt  *time.Time
}

// InsertClient adds an API client; a used id or name is ErrExists.
func (t *Tx) InsertClient(c Client) error {
	t.config = true
	models, _ := json.Marshal(c.Models)
	types, _ := json.Marshal(c.Types)
	res, err := t.exec(`INSERT INTO clients (id, name, brand, models, types, kind, cert_sha256, limits, secret_hash, created_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING`,
		c.ID, c.Name, c.Brand, string(models), string(types), c.Kind, c.CertSHA256, c.Limits, c.SecretHash, micros(t.now))
	return inserted(res, err, fmt.Sprintf("client %q", c.Name))
}

// SetClientLimits replaces an active client's limits.
func (t *Tx) SetClientLimits(name, limits string) error {
	t.config = true
	res, err := t.exec(`UPDATE clients SET limits = $1 WHERE name = $2 AND revoked_us IS NULL`, limits, name)
	return expectOne(res, err, "setting the limits of client "+name)
}

const clientCols = `id, name, brand, models, types, kind, cert_sha256, limits, secret_hash, created_us, revoked_us`

func scanClient(row interface{ Scan(...any) error }) (Client, error) {
	var c Client
	var models, types string
	var created int64
	var revoked sql.NullInt64
	if err := row.Scan(&c.ID, &c.Name, &c.Brand, &models, &types, &c.Kind, &c.CertSHA256, &c.Limits, &c.SecretHash, &created, &revoked); err != nil {
		return Client{}, err
	}
	if err := json.Unmarshal([]byte(models), &c.Models); err != nil {
		return Client{}, fmt.Errorf("store: client %s models: %w", c.ID, err)
	}
	if err := json.Unmarshal([]byte(types), &c.Types); err != nil {
		return Client{}, fmt.Errorf("store: client %s types: %w", c.ID, err)
	}
	c.CreatedAt, c.RevokedAt = fromMicros(created), timePtr(revoked)
	return c, nil
}

// GetClient returns a client by id.
func (t *Tx) GetClient(id string) (Client, error) {
	c, err := scanClient(t.queryRow(`SELECT `+clientCols+` FROM clients WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Client{}, fmt.Errorf("store: client %q: %w", id, ErrNotFound)
	}
	return c, err
}

// GetClientByName returns a client by name.
func (t *Tx) GetClientByName(name string) (Client, error) {
	c, err := scanClient(t.queryRow(`SELECT `+clientCols+` FROM clients WHERE name = $1`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Client{}, fmt.Errorf("store: client %q: %w", name, ErrNotFound)
	}
	return c, err
}

// ListClients returns all clients.
func (t *Tx) ListClients() ([]Client, error) {
	rows, err := t.query(`SELECT ` + clientCols + ` FROM clients ORDER BY created_us, name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Client
	for rows.Next() {
		c, err := scanClient(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// ClientRevoked reports whether API client name is revoked (or gone),
// read in this transaction (see KeyStateOf).
func (t *Tx) ClientRevoked(name string) (bool, error) {
	var revoked sql.NullInt64
	err := t.queryRow(`SELECT revoked_us FROM clients WHERE name = $1`, name).Scan(&revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return true, nil
	}
	return revoked.Valid, err
}

// RevokeClient marks an active client revoked.
func (t *Tx) RevokeClient(name string) error {
	t.config = true
	res, err := t.exec(`UPDATE clients SET revoked_us = $1 WHERE name = $2 AND revoked_us IS NULL`, micros(t.now), name)
	return expectOne(res, err, "revoking client "+name)
}

// Setting returns a named setting ("" and ErrNotFound when unset).
func (t *Tx) Setting(name string) (string, error) {
	var v string
	err := t.queryRow(`SELECT value FROM settings WHERE name = $1`, name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("store: setting %q: %w", name, ErrNotFound)
	}
	return v, err
}

// SetSetting writes a named setting once; an existing one is ErrExists.
func (t *Tx) SetSetting(name, value string) error {
	res, err := t.exec(`INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING`, name, value)
	return inserted(res, err, fmt.Sprintf("setting %q", name))
}

// ChangeSetting changes a setting that exists.
func (t *Tx) ChangeSetting(name, value string) error {
	res, err := t.exec(`UPDATE settings SET value = $1 WHERE name = $2`, value, name)
	return expectOne(res, err, fmt.Sprintf("changing setting %q", name))
}
