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
	ProposalPending ProposalState = "pending"
	// ProposalExecuting: the quorum was reached and one appliance is
	// carrying the proposal out, until its lease ends.
	ProposalExecuting ProposalState = "executing"
	ProposalExecuted  ProposalState = "executed"
	ProposalFailed    ProposalState = "failed"
	ProposalCancelled ProposalState = "cancelled"
	ProposalExpired   ProposalState = "expired"
)

// Proposal is a ceremony operation waiting for, or decided by, officers'
// approvals.
type Proposal struct {
	ID      string
	Kind    string
	Payload string // JSON; wrapped blobs only, never plaintext secrets
	Summary string // what officers approve, in words
	// Content is the canonical content officers sign to approve: made
	// from the other fields when the proposal is created, and made again
	// and compared before it is carried out.
	Content   string
	Proposer  string
	State     ProposalState
	Result    string
	CreatedAt time.Time
	ExpiresAt time.Time
	DecidedAt *time.Time
	LeaseEnd  *time.Time // while executing
	Approvals []Approval // in approval order
}

// Approval is one officer's signature over a proposal's content.
type Approval struct {
	Officer   string
	Signature []byte // SSH wire form
	At        time.Time
}

// Officers lists the approvers' names in approval order.
func (p Proposal) Officers() []string {
	out := make([]string, len(p.Approvals))
	for i, a := range p.Approvals {
		out[i] = a.Officer
	}
	return out
}

// InsertProposal adds a pending proposal; its creation time is the
// transaction's (Tx.Now), which p.Content must already say.
func (t *Tx) InsertProposal(p Proposal) error {
	res, err := t.exec(`INSERT INTO proposals (id, kind, payload, summary, content, proposer, state, created_us, expires_us)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING`,
		p.ID, p.Kind, p.Payload, p.Summary, p.Content, p.Proposer, ProposalPending, micros(t.now), micros(p.ExpiresAt))
	return inserted(res, err, "proposal "+p.ID)
}

const proposalCols = `id, kind, payload, summary, content, proposer, state, result, created_us, expires_us, decided_us, lease_us`

func (t *Tx) scanProposal(row interface{ Scan(...any) error }) (Proposal, error) {
	var p Proposal
	var created, expires int64
	var decided, lease sql.NullInt64
	if err := row.Scan(&p.ID, &p.Kind, &p.Payload, &p.Summary, &p.Content, &p.Proposer, &p.State, &p.Result, &created, &expires, &decided, &lease); err != nil {
		return Proposal{}, err
	}
	p.CreatedAt, p.ExpiresAt, p.DecidedAt, p.LeaseEnd = fromMicros(created), fromMicros(expires), timePtr(decided), timePtr(lease)
	return p, nil
}

func (t *Tx) approvals(id string) ([]Approval, error) {
	rows, err := t.query(`SELECT officer, signature, created_us FROM approvals WHERE proposal_id = $1 ORDER BY created_us, officer`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Approval
	for rows.Next() {
		var a Approval
		var at int64
		if err := rows.Scan(&a.Officer, &a.Signature, &at); err != nil {
			return nil, err
		}
		a.At = fromMicros(at)
		out = append(out, a)
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

// AddApproval records officer's signed approval; approving twice is
// ErrExists.
func (t *Tx) AddApproval(id, officer string, signature []byte) error {
	res, err := t.exec(`INSERT INTO approvals (proposal_id, officer, signature, created_us) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
		id, officer, signature, micros(t.now))
	return inserted(res, err, fmt.Sprintf("approval of %s by %s", id, officer))
}

// BeginExecution moves a pending proposal to executing until leaseEnd.
func (t *Tx) BeginExecution(id string, leaseEnd time.Time) error {
	res, err := t.exec(`UPDATE proposals SET state = $1, lease_us = $2 WHERE id = $3 AND state = $4`,
		ProposalExecuting, micros(leaseEnd), id, ProposalPending)
	return expectOne(res, err, "executing proposal "+id)
}

// DecideProposal moves a pending or executing proposal to a final state.
func (t *Tx) DecideProposal(id string, to ProposalState, result string) error {
	res, err := t.exec(`UPDATE proposals SET state = $1, result = $2, decided_us = $3, lease_us = NULL WHERE id = $4 AND state IN ($5, $6)`,
		to, result, micros(t.now), id, ProposalPending, ProposalExecuting)
	return expectOne(res, err, "deciding proposal "+id)
}

// VoidApprovals removes officer's approvals of proposals still pending
// and cancels the pending proposals officer made: what a removed officer
// approved or proposed carries no weight. It returns the ids cancelled.
func (t *Tx) VoidApprovals(officer, why string) ([]string, error) {
	if _, err := t.exec(`DELETE FROM approvals WHERE officer = $1 AND proposal_id IN (SELECT id FROM proposals WHERE state = $2)`,
		officer, ProposalPending); err != nil {
		return nil, err
	}
	rows, err := t.query(`UPDATE proposals SET state = $1, result = $2, decided_us = $3 WHERE proposer = $4 AND state = $5 RETURNING id`,
		ProposalCancelled, why, micros(t.now), officer, ProposalPending)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}
