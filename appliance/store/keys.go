package store

import (
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// KeyState is a key record's life stage.
type KeyState string

const (
	// KeyPending: the record exists, the token object is being made. A
	// pending record found at start-up is a ceremony that crashed midway.
	KeyPending KeyState = "pending"
	KeyActive  KeyState = "active"
	// KeyDisabled keys stay in the token but sign nothing.
	KeyDisabled KeyState = "disabled"
	// KeyDestroyed keys are gone from the token; the record stays for audit.
	KeyDestroyed KeyState = "destroyed"
	// KeyFailed records a ceremony that did not complete; no token object.
	KeyFailed KeyState = "failed"
)

// Key is the appliance's record of a token key. The private key itself is
// only ever in the token, addressed by CKAID.
type Key struct {
	Name       string
	CKAID      []byte
	KeyID      string // sign-key-sha3-384
	PublicKey  []byte // PKIX DER
	Bits       int
	Origin     string
	Roles      string // JSON
	State      KeyState
	AccountKey []byte
	ProposalID string
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

const keyCols = `name, cka_id, key_id, public_key, bits, origin, roles, state, account_key, proposal_id, created_us, updated_us`

func scanKey(row interface{ Scan(...any) error }) (Key, error) {
	var k Key
	var keyID sql.NullString
	var created, updated int64
	err := row.Scan(&k.Name, &k.CKAID, &keyID, &k.PublicKey, &k.Bits, &k.Origin, &k.Roles, &k.State,
		&k.AccountKey, &k.ProposalID, &created, &updated)
	if err != nil {
		return Key{}, err
	}
	k.KeyID = keyID.String
	k.CreatedAt, k.UpdatedAt = fromMicros(created), fromMicros(updated)
	return k, nil
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

// InsertKey adds a key record. A used name or CKA_ID is ErrExists.
func (t *Tx) InsertKey(k Key) error {
	t.config = true
	res, err := t.exec(`INSERT INTO keys (`+keyCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING`,
		k.Name, k.CKAID, nullString(k.KeyID), k.PublicKey, k.Bits, k.Origin, k.Roles, k.State, k.AccountKey,
		k.ProposalID, micros(t.now), micros(t.now))
	return inserted(res, err, fmt.Sprintf("key %q", k.Name))
}

// ActivateKey completes a pending record with what the token reported.
func (t *Tx) ActivateKey(name, keyID string, publicKey []byte, bits int) error {
	t.config = true
	res, err := t.exec(`UPDATE keys SET key_id = $1, public_key = $2, bits = $3, state = $4, updated_us = $5
		WHERE name = $6 AND state = $7`, keyID, publicKey, bits, KeyActive, micros(t.now), name, KeyPending)
	if isUnique(err) {
		return fmt.Errorf("store: key id %s is already recorded for another key: %w", keyID, ErrExists)
	}
	return expectOne(res, err, "activating key "+name)
}

// SetKeyState moves a key from one state to another; ErrConflict when the
// key is not in state from.
func (t *Tx) SetKeyState(name string, from, to KeyState) error {
	t.config = true
	res, err := t.exec(`UPDATE keys SET state = $1, updated_us = $2 WHERE name = $3 AND state = $4`,
		to, micros(t.now), name, from)
	return expectOne(res, err, fmt.Sprintf("key %s %s -> %s", name, from, to))
}

// SetAccountKey stores the Brand Store's account-key assertion of a key.
func (t *Tx) SetAccountKey(name string, assertion []byte) error {
	t.config = true
	res, err := t.exec(`UPDATE keys SET account_key = $1, updated_us = $2 WHERE name = $3`, assertion, micros(t.now), name)
	return expectOne(res, err, "storing account-key of "+name)
}

// GetKey returns the record of key name.
func (t *Tx) GetKey(name string) (Key, error) {
	k, err := scanKey(t.queryRow(`SELECT `+keyCols+` FROM keys WHERE name = $1`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Key{}, fmt.Errorf("store: key %q: %w", name, ErrNotFound)
	}
	return k, err
}

// KeyStateOf returns the state of key name, read in this transaction:
// signing paths check it in the transaction that records a signature, so
// a key disabled anywhere (on any appliance sharing the store) stops
// signatures from leaving at once, whatever callers cached.
func (t *Tx) KeyStateOf(name string) (KeyState, error) {
	var st KeyState
	err := t.queryRow(`SELECT state FROM keys WHERE name = $1`, name).Scan(&st)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("store: key %q: %w", name, ErrNotFound)
	}
	return st, err
}

// GetKeyByKeyID returns the record whose sign-key-sha3-384 is keyID.
func (t *Tx) GetKeyByKeyID(keyID string) (Key, error) {
	k, err := scanKey(t.queryRow(`SELECT `+keyCols+` FROM keys WHERE key_id = $1`, keyID))
	if errors.Is(err, sql.ErrNoRows) {
		return Key{}, fmt.Errorf("store: key id %s: %w", keyID, ErrNotFound)
	}
	return k, err
}

// ListKeys returns every key record, oldest first.
func (t *Tx) ListKeys() ([]Key, error) {
	rows, err := t.query(`SELECT ` + keyCols + ` FROM keys ORDER BY created_us, name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

func expectOne(res sql.Result, err error, what string) error {
	if err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	if n != 1 {
		return fmt.Errorf("store: %s: %w", what, ErrConflict)
	}
	return nil
}
