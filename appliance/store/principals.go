package store

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Officer is a security officer. Only a hash of the credential is stored.
type Officer struct {
	ID         int64
	Name       string
	SecretHash []byte
	CreatedAt  time.Time
	RevokedAt  *time.Time
}

// InsertOfficer adds an officer; a used name is ErrExists.
func (t *Tx) InsertOfficer(name string, secretHash []byte) (int64, error) {
	var id int64
	err := t.queryRow(`INSERT INTO officers (name, secret_hash, created_us) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING id`,
		name, secretHash, micros(t.now)).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("store: officer %q: %w", name, ErrExists)
	}
	if err != nil {
		return 0, fmt.Errorf("store: inserting officer: %w", err)
	}
	return id, nil
}

const officerCols = `id, name, secret_hash, created_us, revoked_us`

func scanOfficer(row interface{ Scan(...any) error }) (Officer, error) {
	var o Officer
	var created int64
	var revoked sql.NullInt64
	if err := row.Scan(&o.ID, &o.Name, &o.SecretHash, &created, &revoked); err != nil {
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

// CountActiveOfficers returns how many officers are not revoked.
func (t *Tx) CountActiveOfficers() (int, error) {
	var n int
	err := t.queryRow(`SELECT count(*) FROM officers WHERE revoked_us IS NULL`).Scan(&n)
	return n, err
}

// Client is a factory API client with its scope.
type Client struct {
	ID         string
	Name       string
	Brand      string
	Models     []string
	Types      []string
	SecretHash []byte
	CreatedAt  time.Time
	RevokedAt  *time.Time
}

// InsertClient adds an API client; a used id or name is ErrExists.
func (t *Tx) InsertClient(c Client) error {
	t.config = true
	models, _ := json.Marshal(c.Models)
	types, _ := json.Marshal(c.Types)
	res, err := t.exec(`INSERT INTO clients (id, name, brand, models, types, secret_hash, created_us) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`,
		c.ID, c.Name, c.Brand, string(models), string(types), c.SecretHash, micros(t.now))
	return inserted(res, err, fmt.Sprintf("client %q", c.Name))
}

const clientCols = `id, name, brand, models, types, secret_hash, created_us, revoked_us`

func scanClient(row interface{ Scan(...any) error }) (Client, error) {
	var c Client
	var models, types string
	var created int64
	var revoked sql.NullInt64
	if err := row.Scan(&c.ID, &c.Name, &c.Brand, &models, &types, &c.SecretHash, &created, &revoked); err != nil {
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
