package store

import (
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ProposalState is where a ceremony proposal stands.
type ProposalState string

const (
	ProposalPending   ProposalState = "pending"
	ProposalExecuted  ProposalState = "executed"
	ProposalFailed    ProposalState = "failed"
	ProposalCancelled ProposalState = "cancelled"
	ProposalExpired   ProposalState = "expired"
)

// Proposal is a ceremony operation waiting for, or decided by, officers'
// approvals.
type Proposal struct {
	ID        string
	Kind      string
	Payload   string // JSON; wrapped blobs only, never plaintext secrets
	Summary   string // what officers approve, in words
	Proposer  string
	State     ProposalState
	Result    string
	CreatedAt time.Time
	ExpiresAt time.Time
	DecidedAt *time.Time
	Approvals []string // officer names, in approval order
}

// InsertProposal adds a pending proposal.
func (t *Tx) InsertProposal(p Proposal) error {
	res, err := t.exec(`INSERT INTO proposals (id, kind, payload, summary, proposer, state, created_us, expires_us)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING`,
		p.ID, p.Kind, p.Payload, p.Summary, p.Proposer, ProposalPending, micros(t.now), micros(p.ExpiresAt))
	return inserted(res, err, "proposal "+p.ID)
}

const proposalCols = `id, kind, payload, summary, proposer, state, result, created_us, expires_us, decided_us`

func (t *Tx) scanProposal(row interface{ Scan(...any) error }) (Proposal, error) {
	var p Proposal
	var created, expires int64
	var decided sql.NullInt64
	if err := row.Scan(&p.ID, &p.Kind, &p.Payload, &p.Summary, &p.Proposer, &p.State, &p.Result, &created, &expires, &decided); err != nil {
		return Proposal{}, err
	}
	p.CreatedAt, p.ExpiresAt, p.DecidedAt = fromMicros(created), fromMicros(expires), timePtr(decided)
	return p, nil
}

func (t *Tx) approvals(id string) ([]string, error) {
	rows, err := t.query(`SELECT officer FROM approvals WHERE proposal_id = $1 ORDER BY created_us, officer`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var o string
		if err := rows.Scan(&o); err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// GetProposal returns a proposal with its approvals.
func (t *Tx) GetProposal(id string) (Proposal, error) {
	p, err := t.scanProposal(t.queryRow(`SELECT `+proposalCols+` FROM proposals WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Proposal{}, fmt.Errorf("store: proposal %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Proposal{}, err
	}
	p.Approvals, err = t.approvals(id)
	return p, err
}

// ListProposals returns proposals, newest first; state "" means all.
func (t *Tx) ListProposals(state ProposalState, limit int) ([]Proposal, error) {
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	rows, err := t.query(`SELECT `+proposalCols+` FROM proposals WHERE ($1 = '' OR state = $1) ORDER BY created_us DESC, id LIMIT $2`, string(state), limit)
	if err != nil {
		return nil, err
	}
	var out []Proposal
	for rows.Next() {
		p, err := t.scanProposal(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i := range out {
		if out[i].Approvals, err = t.approvals(out[i].ID); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// AddApproval records officer's approval; approving twice is ErrExists.
func (t *Tx) AddApproval(id, officer string) error {
	res, err := t.exec(`INSERT INTO approvals (proposal_id, officer, created_us) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, id, officer, micros(t.now))
	return inserted(res, err, fmt.Sprintf("approval of %s by %s", id, officer))
}

// DecideProposal moves a pending proposal to a final state.
func (t *Tx) DecideProposal(id string, to ProposalState, result string) error {
	res, err := t.exec(`UPDATE proposals SET state = $1, result = $2, decided_us = $3 WHERE id = $4 AND state = $5`,
		to, result, micros(t.now), id, ProposalPending)
	return expectOne(res, err, "deciding proposal "+id)
}
