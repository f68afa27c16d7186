package store

import (
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ModelTemplate is the model assertion officers approved for a model: the
// exact headers (JSON) and body of the statement, signed again and again
// with only timestamp and revision set at each signature.
type ModelTemplate struct {
	Brand      string
	Model      string
	Headers    string // JSON object
	Body       string
	ProposalID string
	// LastRevision is the highest revision signed from this model's
	// templates (0: none yet). It only grows: replacing the template keeps
	// it.
	LastRevision int64
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// PutModelTemplate records brand/model's template, replacing an earlier
// one but keeping the revision counter.
func (t *Tx) PutModelTemplate(m ModelTemplate) error {
	_, err := t.exec(`INSERT INTO model_templates (brand, model, headers, body, proposal_id, last_revision, created_us, updated_us)
		VALUES ($1, $2, $3, $4, $5, 0, $6, $6)
		ON CONFLICT (brand, model) DO UPDATE SET headers = excluded.headers, body = excluded.body,
			proposal_id = excluded.proposal_id, updated_us = excluded.updated_us`,
		m.Brand, m.Model, m.Headers, m.Body, m.ProposalID, micros(t.now))
	if err != nil {
		return fmt.Errorf("store: model template %s/%s: %w", m.Brand, m.Model, err)
	}
	return nil
}

const templateCols = `brand, model, headers, body, proposal_id, last_revision, created_us, updated_us`

func scanTemplate(row interface{ Scan(...any) error }) (ModelTemplate, error) {
	var m ModelTemplate
	var created, updated int64
	if err := row.Scan(&m.Brand, &m.Model, &m.Headers, &m.Body, &m.ProposalID, &m.LastRevision, &created, &updated); err != nil {
		return ModelTemplate{}, err
	}
	m.CreatedAt, m.UpdatedAt = fromMicros(created), fromMicros(updated)
	return m, nil
}

// GetModelTemplate returns brand/model's template.
func (t *Tx) GetModelTemplate(brand, model string) (ModelTemplate, error) {
	m, err := scanTemplate(t.queryRow(`SELECT `+templateCols+` FROM model_templates WHERE brand = $1 AND model = $2`, brand, model))
	if errors.Is(err, sql.ErrNoRows) {
		return ModelTemplate{}, fmt.Errorf("store: model template %s/%s: %w", brand, model, ErrNotFound)
	}
	return m, err
}

// ListModelTemplates returns every template, by brand and model.
func (t *Tx) ListModelTemplates() ([]ModelTemplate, error) {
	rows, err := t.query(`SELECT ` + templateCols + ` FROM model_templates ORDER BY brand, model`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ModelTemplate
	for rows.Next() {
		m, err := scanTemplate(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// AdvanceTemplateRevision raises brand/model's revision counter to rev.
// It is ErrConflict if the counter is already at rev or beyond: that
// revision was taken by another signature.
func (t *Tx) AdvanceTemplateRevision(brand, model string, rev int64) error {
	res, err := t.exec(`UPDATE model_templates SET last_revision = $1 WHERE brand = $2 AND model = $3 AND last_revision < $1`,
		rev, brand, model)
	return expectOne(res, err, fmt.Sprintf("revision %d of model template %s/%s", rev, brand, model))
}

// MaxLoggedRevision is the highest revision in the signing log for
// assertions of type typ for brand/model (0 if none).
func (t *Tx) MaxLoggedRevision(typ, brand, model string) (int64, error) {
	var n int64
	err := t.queryRow(`SELECT COALESCE(MAX(revision), 0) FROM signing_log WHERE brand = $1 AND model = $2 AND type = $3`,
		brand, model, typ).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("store: highest logged revision of %s %s/%s: %w", typ, brand, model, err)
	}
	return n, nil
}

// PutSignedAssertion keeps the assertion an assertion.sign proposal made,
// for its officers to fetch.
func (t *Tx) PutSignedAssertion(proposalID string, assertion []byte) error {
	res, err := t.exec(`INSERT INTO signed_assertions (proposal_id, assertion, created_us) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
		proposalID, assertion, micros(t.now))
	return inserted(res, err, "signed assertion of proposal "+proposalID)
}

// GetSignedAssertion returns the assertion proposal proposalID made.
func (t *Tx) GetSignedAssertion(proposalID string) ([]byte, error) {
	var b []byte
	err := t.queryRow(`SELECT assertion FROM signed_assertions WHERE proposal_id = $1`, proposalID).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store: signed assertion of proposal %s: %w", proposalID, ErrNotFound)
	}
	return b, err
}
