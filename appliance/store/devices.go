package store

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ModelConfig binds a brand's model to the keys that sign for it and says
// where serial numbers come from.
type ModelConfig struct {
	Brand        string
	Model        string
	Keys         map[string]string // assertion type -> key name
	SerialSource string            // "request" or "assign"
	SerialPrefix string
	NextSerial   int64
	AllowRekey   bool
	ProposalID   string
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// PutModel creates or replaces a model's configuration, keeping its serial
// sequence.
func (t *Tx) PutModel(m ModelConfig) error {
	t.config = true
	keys, err := json.Marshal(m.Keys)
	if err != nil {
		return err
	}
	if m.NextSerial < 1 {
		m.NextSerial = 1
	}
	_, err = t.exec(`INSERT INTO models (brand, model, keys, serial_source, serial_prefix, next_serial, allow_rekey, proposal_id, created_us, updated_us)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
		ON CONFLICT (brand, model) DO UPDATE SET keys = excluded.keys, serial_source = excluded.serial_source,
			serial_prefix = excluded.serial_prefix, allow_rekey = excluded.allow_rekey, proposal_id = excluded.proposal_id,
			updated_us = excluded.updated_us`,
		m.Brand, m.Model, string(keys), m.SerialSource, m.SerialPrefix, m.NextSerial, boolInt(m.AllowRekey), m.ProposalID, micros(t.now))
	if err != nil {
		return fmt.Errorf("store: model %s/%s: %w", m.Brand, m.Model, err)
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

const modelCols = `brand, model, keys, serial_source, serial_prefix, next_serial, allow_rekey, proposal_id, created_us, updated_us`

func scanModel(row interface{ Scan(...any) error }) (ModelConfig, error) {
	var m ModelConfig
	var keys string
	var rekey int
	var created, updated int64
	if err := row.Scan(&m.Brand, &m.Model, &keys, &m.SerialSource, &m.SerialPrefix, &m.NextSerial, &rekey, &m.ProposalID, &created, &updated); err != nil {
		return ModelConfig{}, err
	}
	if err := json.Unmarshal([]byte(keys), &m.Keys); err != nil {
		return ModelConfig{}, fmt.Errorf("store: model %s/%s keys: %w", m.Brand, m.Model, err)
	}
	m.AllowRekey = rekey != 0
	m.CreatedAt, m.UpdatedAt = fromMicros(created), fromMicros(updated)
	return m, nil
}

// GetModel returns a model's configuration.
func (t *Tx) GetModel(brand, model string) (ModelConfig, error) {
	m, err := scanModel(t.queryRow(`SELECT `+modelCols+` FROM models WHERE brand = $1 AND model = $2`, brand, model))
	if errors.Is(err, sql.ErrNoRows) {
		return ModelConfig{}, fmt.Errorf("store: model %s/%s: %w", brand, model, ErrNotFound)
	}
	return m, err
}

// ListModels returns every model configuration.
func (t *Tx) ListModels() ([]ModelConfig, error) {
	rows, err := t.query(`SELECT ` + modelCols + ` FROM models ORDER BY brand, model`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ModelConfig
	for rows.Next() {
		m, err := scanModel(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// NextSerial takes the next number of a model's serial sequence.
func (t *Tx) NextSerial(brand, model string) (int64, error) {
	var n int64
	err := t.queryRow(`UPDATE models SET next_serial = next_serial + 1 WHERE brand = $1 AND model = $2 RETURNING next_serial - 1`, brand, model).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("store: model %s/%s: %w", brand, model, ErrNotFound)
	}
	return n, err
}

// ErrNonceUsed: the request-id was claimed before.
var ErrNonceUsed = errors.New("request-id already used")

// ClaimNonce records that a request-id, already verified by the appliance
// (its MAC and expiry), is being used by client. Exactly one caller can
// claim it: the row is the set of used request-ids, and on PostgreSQL a
// concurrent claim of the same id waits for the first and then conflicts.
func (t *Tx) ClaimNonce(id, client string, expires time.Time) error {
	res, err := t.exec(`INSERT INTO nonces (id, client, state, created_us, expires_us, used_us) VALUES ($1, $2, 'claimed', $3, $4, $3)
		ON CONFLICT DO NOTHING`, id, client, micros(t.now), micros(expires))
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return err
	}
	return ErrNonceUsed
}

// CountNonces returns how many request-ids the store holds.
func (t *Tx) CountNonces() (int64, error) {
	var n int64
	err := t.queryRow(`SELECT COUNT(*) FROM nonces`).Scan(&n)
	return n, err
}

// ConsumeNonce finishes a claimed request-id.
func (t *Tx) ConsumeNonce(id string) error {
	res, err := t.exec(`UPDATE nonces SET state = 'consumed', used_us = $1 WHERE id = $2 AND state = 'claimed'`, micros(t.now), id)
	return expectOne(res, err, "consuming request-id")
}

// PurgeNonces deletes the used request-ids that expired before cutoff
// (their expiry refuses them before the store is asked) and returns how
// many. A claimed one is kept an hour longer: a signature in flight may
// still consume it. Rows issued by an appliance from before request-ids
// carried their own MAC go the same way.
func (t *Tx) PurgeNonces(cutoff time.Time) (int64, error) {
	res, err := t.exec(`DELETE FROM nonces WHERE (expires_us < $1 AND state <> 'claimed') OR expires_us < $2`,
		micros(cutoff), micros(cutoff.Add(-time.Hour)))
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// SerialRecord is the appliance's record of an issued (or being signed)
// serial.
type SerialRecord struct {
	Brand, Model, Serial string
	DeviceKeyID          string
	Revision             int
	State                string // signing | issued
	Assertion            []byte
	Client               string
	Nonce                string
}

// GetSerial returns the record of a serial.
func (t *Tx) GetSerial(brand, model, serial string) (SerialRecord, error) {
	var r SerialRecord
	var upd int64
	err := t.queryRow(`SELECT brand, model, serial, device_key_id, revision, state, assertion, client, nonce, updated_us
		FROM serials WHERE brand = $1 AND model = $2 AND serial = $3`, brand, model, serial).
		Scan(&r.Brand, &r.Model, &r.Serial, &r.DeviceKeyID, &r.Revision, &r.State, &r.Assertion, &r.Client, &r.Nonce, &upd)
	if errors.Is(err, sql.ErrNoRows) {
		return SerialRecord{}, fmt.Errorf("store: serial %s/%s/%s: %w", brand, model, serial, ErrNotFound)
	}
	return r, err
}

// ReserveSerial inserts a serial in state "signing"; ErrExists when the
// serial is taken.
func (t *Tx) ReserveSerial(r SerialRecord) error {
	res, err := t.exec(`INSERT INTO serials (brand, model, serial, device_key_id, revision, state, client, nonce, updated_us)
		VALUES ($1, $2, $3, $4, $5, 'signing', $6, $7, $8) ON CONFLICT DO NOTHING`,
		r.Brand, r.Model, r.Serial, r.DeviceKeyID, r.Revision, r.Client, r.Nonce, micros(t.now))
	return inserted(res, err, "serial "+r.Serial)
}

// RekeySerial moves an issued serial to a new device key and revision,
// in state "signing".
func (t *Tx) RekeySerial(r SerialRecord, fromRevision int) error {
	res, err := t.exec(`UPDATE serials SET pending_key_id = $1, revision = $2, state = 'signing', client = $3, nonce = $4, updated_us = $5
		WHERE brand = $6 AND model = $7 AND serial = $8 AND state = 'issued' AND revision = $9`,
		r.DeviceKeyID, r.Revision, r.Client, r.Nonce, micros(t.now), r.Brand, r.Model, r.Serial, fromRevision)
	return expectOne(res, err, "re-keying serial "+r.Serial)
}

// IssueSerial completes a reservation with the signed assertion.
func (t *Tx) IssueSerial(brand, model, serial, nonce string, assertion []byte) error {
	res, err := t.exec(`UPDATE serials SET state = 'issued', assertion = $1, updated_us = $2,
			device_key_id = COALESCE(pending_key_id, device_key_id), pending_key_id = NULL
		WHERE brand = $3 AND model = $4 AND serial = $5 AND state = 'signing' AND nonce = $6`,
		assertion, micros(t.now), brand, model, serial, nonce)
	return expectOne(res, err, "issuing serial "+serial)
}

// DropSerialReservation undoes a reservation whose signing failed: a new
// serial is removed, with its device key's binding, a re-key returns to
// the serial as it was issued.
func (t *Tx) DropSerialReservation(brand, model, serial, nonce string) error {
	res, err := t.exec(`DELETE FROM serials WHERE brand = $1 AND model = $2 AND serial = $3 AND state = 'signing' AND nonce = $4 AND pending_key_id IS NULL`,
		brand, model, serial, nonce)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n > 0 {
		if _, err := t.exec(`DELETE FROM device_serials WHERE brand = $1 AND model = $2 AND serial = $3`, brand, model, serial); err != nil {
			return err
		}
	}
	_, err = t.exec(`UPDATE serials SET state = 'issued', revision = revision - 1, pending_key_id = NULL
		WHERE brand = $1 AND model = $2 AND serial = $3 AND state = 'signing' AND nonce = $4 AND pending_key_id IS NOT NULL`,
		brand, model, serial, nonce)
	return err
}

// DeviceSerial returns the serial bound to a device key in a model whose
// serials the appliance assigns.
func (t *Tx) DeviceSerial(brand, model, deviceKeyID string) (string, error) {
	var serial string
	err := t.queryRow(`SELECT serial FROM device_serials WHERE brand = $1 AND model = $2 AND device_key_id = $3`, brand, model, deviceKeyID).Scan(&serial)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("store: serial of device key %s in %s/%s: %w", deviceKeyID, brand, model, ErrNotFound)
	}
	return serial, err
}

// BindDeviceSerial binds a device key to its serial in a model whose
// serials the appliance assigns; ErrExists when the key has one. On
// PostgreSQL a concurrent binding of the same key waits for the first
// and then conflicts, so one key gets one serial across appliances.
func (t *Tx) BindDeviceSerial(brand, model, deviceKeyID, serial string) error {
	res, err := t.exec(`INSERT INTO device_serials (brand, model, device_key_id, serial) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
		brand, model, deviceKeyID, serial)
	return inserted(res, err, "device key "+deviceKeyID+"'s serial")
}

// UnbindDeviceSerial drops a device key's binding.
func (t *Tx) UnbindDeviceSerial(brand, model, deviceKeyID string) error {
	_, err := t.exec(`DELETE FROM device_serials WHERE brand = $1 AND model = $2 AND device_key_id = $3`, brand, model, deviceKeyID)
	return err
}

// RekeyGrant is an officers' permission for one serial to move to one new
// device key, once, before it expires.
type RekeyGrant struct {
	Brand, Model, Serial string
	DeviceKeyID          string
	ProposalID           string
	Expires              time.Time
}

// PutRekeyGrant records a grant, replacing an earlier one for the serial.
func (t *Tx) PutRekeyGrant(g RekeyGrant) error {
	_, err := t.exec(`INSERT INTO rekey_grants (brand, model, serial, device_key_id, proposal_id, expires_us) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (brand, model, serial) DO UPDATE SET device_key_id = excluded.device_key_id, proposal_id = excluded.proposal_id,
			expires_us = excluded.expires_us`,
		g.Brand, g.Model, g.Serial, g.DeviceKeyID, g.ProposalID, micros(g.Expires))
	return err
}

// TakeRekeyGrant uses up the unexpired grant for serial to move to
// deviceKeyID, and returns its proposal; ErrNotFound when there is none.
func (t *Tx) TakeRekeyGrant(brand, model, serial, deviceKeyID string) (string, error) {
	var proposal string
	err := t.queryRow(`DELETE FROM rekey_grants WHERE brand = $1 AND model = $2 AND serial = $3 AND device_key_id = $4 AND expires_us >= $5
		RETURNING proposal_id`, brand, model, serial, deviceKeyID, micros(t.now)).Scan(&proposal)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("store: re-key grant for %s/%s/%s: %w", brand, model, serial, ErrNotFound)
	}
	return proposal, err
}

// StaleReservations returns serials left in state "signing" since before
// cutoff (a crash between reservation and issue; younger ones may be in
// progress on another appliance sharing the store).
func (t *Tx) StaleReservations(cutoff time.Time) ([]SerialRecord, error) {
	rows, err := t.query(`SELECT brand, model, serial, nonce, revision FROM serials WHERE state = 'signing' AND updated_us < $1`, micros(cutoff))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []SerialRecord
	for rows.Next() {
		var r SerialRecord
		if err := rows.Scan(&r.Brand, &r.Model, &r.Serial, &r.Nonce, &r.Revision); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// LogEntry is one row of the signing log: every signature the appliance
// released.
type LogEntry struct {
	ID          int64     `json:"id"`
	Time        time.Time `json:"time"`
	Type        string    `json:"type"`
	KeyID       string    `json:"key-id"`
	Brand       string    `json:"brand"`
	Model       string    `json:"model"`
	Serial      string    `json:"serial,omitempty"`
	DeviceKeyID string    `json:"device-key-id,omitempty"`
	Client      string    `json:"client"`
	Revision    int       `json:"revision"`
	Digest      string    `json:"digest"`
}

// LogSignature appends to the signing log.
func (t *Tx) LogSignature(e LogEntry) (int64, error) {
	var id int64
	err := t.queryRow(`INSERT INTO signing_log (time_us, type, key_id, brand, model, serial, device_key_id, client, revision, digest)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id`,
		micros(t.now), e.Type, e.KeyID, e.Brand, e.Model, e.Serial, e.DeviceKeyID, e.Client, e.Revision, e.Digest).Scan(&id)
	return id, err
}

// LogFilter selects signing-log rows; empty fields match anything.
type LogFilter struct {
	Type, Brand, Model, Serial, Client string
	Since, Until                       time.Time
	After                              int64 // rows with id > After
	// Upto, when not 0, ends the range at id <= Upto: an export that
	// pages through the log stops at the rows present when it began.
	Upto  int64
	Limit int
}

// maxLogPage bounds one call of SigningLog: a caller that wants more
// pages on with After (see LogFilter), so no call holds more than this
// many rows in memory.
const maxLogPage = 10000

// SigningLog returns rows matching f in id order, at most f.Limit of them:
// maxLogPage when f.Limit is 0, and never more than maxLogPage+1 (a page
// and the one row beyond it that tells its reader another page follows).
func (t *Tx) SigningLog(f LogFilter) ([]LogEntry, error) {
	switch {
	case f.Limit <= 0:
		f.Limit = maxLogPage
	case f.Limit > maxLogPage+1:
		f.Limit = maxLogPage + 1
	}
	upto := f.Upto
	if upto <= 0 {
		upto = 1<<63 - 1
	}
	until := f.Until
	if until.IsZero() {
		until = time.Unix(1<<40, 0)
	}
	rows, err := t.query(`SELECT id, time_us, type, key_id, brand, model, serial, device_key_id, client, revision, digest FROM signing_log
		WHERE id > $1 AND ($2 = '' OR type = $2) AND ($3 = '' OR brand = $3) AND ($4 = '' OR model = $4)
		AND ($5 = '' OR serial = $5) AND ($6 = '' OR client = $6) AND time_us >= $7 AND time_us < $8 AND id <= $9
		ORDER BY id LIMIT $10`,
		f.After, f.Type, f.Brand, f.Model, f.Serial, f.Client, micros(f.Since), micros(until), upto, f.Limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []LogEntry
	for rows.Next() {
		var e LogEntry
		var us int64
		if err := rows.Scan(&e.ID, &us, &e.Type, &e.KeyID, &e.Brand, &e.Model, &e.Serial, &e.DeviceKeyID, &e.Client, &e.Revision, &e.Digest); err != nil {
			return nil, err
		}
		e.Time = fromMicros(us)
		out = append(out, e)
	}
	return out, rows.Err()
}
