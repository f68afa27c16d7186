package appliance

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/keyrack/keyrack/appliance/officerkey"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
	"github.com/keyrack/keyrack/hsm"
)

// Proposal kinds: every ceremony operation is one of these, and takes
// effect only after Quorum distinct active officers signed it (the
// proposer's signature counts as one, like any other).
const (
	KindKeyGenerate   = "key.generate"
	KindKeyImport     = "key.import"
	KindKeyDisable    = "key.disable"
	KindKeyEnable     = "key.enable"
	KindKeyDestroy    = "key.destroy"
	KindOfficerAdd    = "officer.add"
	KindOfficerRemove = "officer.remove"
	KindOfficerRotate = "officer.rotate"
	KindClientCreate  = "client.create"
	KindClientRevoke  = "client.revoke"
)

// The payloads below are what a proposal stores and officers approve. They
// are kept apart from the API's request types (package wire), even where
// the fields are the same, so that a change to the API never changes what
// is on record for proposals already made.

// keyPayload is the payload of key.generate and key.import. Blob is the
// wrapped key (never plaintext): an armored upload is wrapped to the
// import key before it becomes a proposal.
type keyPayload struct {
	Name   string          `json:"name"`
	Roles  json.RawMessage `json:"roles"`
	Blob   []byte          `json:"blob,omitempty"`
	Source string          `json:"source,omitempty"` // wrapped | armored-upload
	// Fingerprint of an uploaded OpenPGP key, so officers approve the key
	// they expect.
	Fingerprint string `json:"fingerprint,omitempty"`
	// KeyID is the sign-key-sha3-384 of the key inside the blob, as the
	// proposer's `keyrack wrap` printed it (or as computed from an
	// upload): officers approve that key, and the import is refused if the
	// token unwraps another.
	KeyID string `json:"sign-key-sha3-384,omitempty"`
}

type namePayload struct {
	Name string `json:"name"`
}

// officerPayload is the payload of officer.add and officer.rotate: the
// officer and the public key they made (authorized_keys form).
type officerPayload struct {
	Name       string `json:"name"`
	PublicKey  string `json:"public-key"`
	CertSHA256 string `json:"client-cert-sha256,omitempty"`
}

// clientPayload is the payload of client.create. Kind, CertSHA256 and
// Limits came with the two kinds of client (clients.go): proposals made
// before have none of them, and their content stays what was signed.
type clientPayload struct {
	Name       string         `json:"name"`
	Brand      string         `json:"brand"`
	Models     []string       `json:"models"`
	Types      []string       `json:"types"`
	Kind       string         `json:"kind,omitempty"`
	CertSHA256 string         `json:"client-cert-sha256,omitempty"`
	Limits     *limitsPayload `json:"limits,omitempty"`
}

// Outcome is what a proposal, an approval or a cancellation led to.
type Outcome struct {
	Proposal wire.Proposal
	Executed bool
	// Credential is a new officer's or client's secret, returned once to
	// the officer whose approval executed the proposal, never stored.
	Credential string
}

// Pending says the proposal still waits for approvals.
func (o Outcome) Pending() bool { return o.Proposal.State == string(store.ProposalPending) }

var (
	errProposalDecided = &Error{Kind: Conflict, Code: "proposal-decided", Message: "the proposal is no longer pending"}
	errAlreadyApproved = &Error{Kind: Conflict, Code: "already-approved", Message: "you have already approved this proposal; another officer must approve"}
	errQuorumReached   = &Error{Kind: Conflict, Code: "quorum-reached", Message: "the proposal already has its approvals and is being carried out"}
)

func newProposalID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// propose checks a ceremony request now (so officers learn of a mistake
// before approving it) and records it with its canonical content, which
// every approval signs, the proposer's included: a proposal does nothing
// until Quorum distinct active officers have signed it.
func (a *Appliance) propose(ctx context.Context, officer, kind, summary string, payload any) (Outcome, error) {
	raw, err := json.Marshal(payload)
	if err != nil {
		return Outcome{}, err
	}
	p := store.Proposal{ID: newProposalID(), Kind: kind, Payload: string(raw), Summary: summary, Proposer: officer}
	err = a.db.Update(ctx, func(tx *store.Tx) error {
		if err := a.precheck(tx, officer, kind, raw); err != nil {
			return err
		}
		// The store keeps microseconds: the content must say what the
		// record will say when it is made again from it.
		p.CreatedAt = tx.Now().UTC().Truncate(time.Microsecond)
		p.ExpiresAt = p.CreatedAt.Add(time.Duration(a.cfg.Officers.ProposalTTL))
		var err error
		if p.Content, err = a.contentOf(p); err != nil {
			return err
		}
		if err := tx.InsertProposal(p); err != nil {
			return err
		}
		q, err := quorumIn(tx)
		if err != nil {
			return err
		}
		_, err = tx.Audit("officer:"+officer, "proposal.create", kind+" "+p.ID, "ok",
			map[string]any{"summary": summary, "quorum": q, "content": p.Content})
		return err
	})
	if err != nil {
		return Outcome{}, err
	}
	return a.outcome(ctx, p.ID, false, "")
}

// executionLease is how long an appliance may take to carry out a
// proposal before the janitor takes it for interrupted: far longer than
// any ceremony takes (key generation, seconds).
const executionLease = 10 * time.Minute

var errBadApproval = &Error{Kind: Refused, Code: "bad-approval",
	Message: "the approval's signature does not verify with your key over this proposal's content: sign the content shown by the appliance"}

// approve adds officer's signed approval. The approval that makes the
// quorum, counted in the same transaction over approvals that still hold
// (validApprovals), moves the proposal to executing under a lease, so
// exactly one approver carries it out.
func (a *Appliance) approve(ctx context.Context, officer, id string, signature []byte) (Outcome, error) {
	var reached, expired bool
	var why error
	err := a.db.Update(ctx, func(tx *store.Tx) error {
		p, err := tx.GetProposal(id)
		if err != nil {
			return err
		}
		switch {
		case p.State == store.ProposalExecuting:
			return errQuorumReached
		case p.State != store.ProposalPending:
			return errProposalDecided
		case tx.Now().After(p.ExpiresAt):
			expired = true
			return errExpired
		}
		for _, ap := range p.Approvals {
			if ap.Officer == officer {
				why = errAlreadyApproved
				return nil
			}
		}
		o, err := tx.GetOfficerByName(officer)
		if err != nil {
			return err
		}
		pub, err := officerKey(o)
		if err != nil {
			return err
		}
		content, err := a.contentOf(p)
		if err != nil {
			return err
		}
		if content != p.Content {
			why = errContentChanged
			return nil
		}
		if err := officerkey.Verify(pub, officerkey.DomainApproval, []byte(content), signature); err != nil {
			why = errBadApproval
			return nil
		}
		if err := tx.AddApproval(id, officer, signature); err != nil {
			if errors.Is(err, store.ErrExists) {
				why = errAlreadyApproved
				return nil
			}
			return err
		}
		p.Approvals = append(p.Approvals, store.Approval{Officer: officer, Signature: signature})
		n, q, err := a.quorumCount(tx, p)
		if err != nil {
			return err
		}
		if _, err = tx.Audit("officer:"+officer, "proposal.approve", p.Kind+" "+id, "ok",
			map[string]any{"approvals": n, "quorum": q, "fingerprint": officerkey.Fingerprint(pub),
				"signature": base64.StdEncoding.EncodeToString(signature)}); err != nil {
			return err
		}
		if n < q {
			return nil
		}
		reached = true
		return tx.BeginExecution(id, tx.Now().Add(executionLease))
	})
	if expired {
		a.expire(ctx, id, officer)
	}
	if err == nil && why != nil {
		err = why
	}
	if err != nil {
		return Outcome{}, err
	}
	if !reached {
		return a.outcome(ctx, id, false, "")
	}
	return a.execute(ctx, id, officer)
}

var errExpired = &Error{Kind: Conflict, Code: "proposal-expired", Message: "the proposal has expired; propose it again"}

func (a *Appliance) expire(ctx context.Context, id, officer string) {
	err := a.db.Update(ctx, func(tx *store.Tx) error {
		if err := tx.DecideProposal(id, store.ProposalExpired, "expired before its approvals"); err != nil {
			return err
		}
		_, err := tx.Audit("officer:"+officer, "proposal.expire", id, "ok", nil)
		return err
	})
	if err != nil && !errors.Is(err, store.ErrConflict) {
		a.log.Warn("expiring proposal", "proposal", id, "err", err)
	}
}

// cancel withdraws a pending proposal: any one officer may stop a
// ceremony, none may make one happen alone.
func (a *Appliance) cancel(ctx context.Context, officer, id string) (Outcome, error) {
	err := a.db.Update(ctx, func(tx *store.Tx) error {
		p, err := tx.GetProposal(id)
		if err != nil {
			return err
		}
		switch p.State {
		case store.ProposalPending:
		case store.ProposalExecuting:
			return errQuorumReached
		default:
			return errProposalDecided
		}
		if err := tx.DecideProposal(id, store.ProposalCancelled, "cancelled by "+officer); err != nil {
			return err
		}
		_, err = tx.Audit("officer:"+officer, "proposal.cancel", p.Kind+" "+id, "ok", nil)
		return err
	})
	if err != nil {
		return Outcome{}, err
	}
	return a.outcome(ctx, id, false, "")
}

func (a *Appliance) outcome(ctx context.Context, id string, executed bool, credential string) (Outcome, error) {
	p, err := a.GetProposal(ctx, id)
	return Outcome{Proposal: p, Executed: executed, Credential: credential}, err
}

// precheck validates a proposal against the current state, so that a
// proposal that cannot succeed is refused before officers spend approvals
// on it. execute checks again: state may change in between.
func (a *Appliance) precheck(tx *store.Tx, proposer, kind string, raw []byte) error {
	switch kind {
	case KindKeyGenerate, KindKeyImport:
		var p keyPayload
		if err := json.Unmarshal(raw, &p); err != nil {
			return err
		}
		if err := validKeyName(p.Name); err != nil {
			return err
		}
		if _, err := parseRoles(p.Roles); err != nil {
			return err
		}
		if _, err := tx.GetKey(p.Name); err == nil {
			return keyExists(p.Name)
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		// A token that cannot unwrap (one reached through p11-kit's
		// RPC) would fail the import only once the quorum approved it.
		if kind == KindKeyImport {
			if err := a.mod.CanImport(); err != nil {
				return err
			}
		}
	case KindKeyDisable, KindKeyEnable, KindKeyDestroy:
		var p namePayload
		if err := json.Unmarshal(raw, &p); err != nil {
			return err
		}
		k, err := tx.GetKey(p.Name)
		if err != nil {
			return err
		}
		return keyTransition(kind, k.State)
	case KindOfficerAdd, KindOfficerRotate:
		var p officerPayload
		if err := json.Unmarshal(raw, &p); err != nil {
			return err
		}
		if kind == KindOfficerRotate && p.Name != proposer {
			return refused("rotate-own-key", "an officer rotates their own key only: the proposal is signed with the key it replaces")
		}
		if kind == KindOfficerAdd {
			if err := validName("officer", p.Name); err != nil {
				return err
			}
			if _, err := tx.GetOfficerByName(p.Name); err == nil {
				return &Error{Kind: Conflict, Code: "officer-exists", Message: fmt.Sprintf("officer %q exists", p.Name)}
			}
		}
		pub, err := parseOfficerKey(p.PublicKey)
		if err != nil {
			return err
		}
		return checkKeyUnused(tx, pub, "")
	case KindOfficerRemove:
		var p namePayload
		if err := json.Unmarshal(raw, &p); err != nil {
			return err
		}
		return a.checkOfficerRemoval(tx, p.Name)
	case KindClientCreate:
		var p clientPayload
		if err := json.Unmarshal(raw, &p); err != nil {
			return err
		}
		if _, err := checkClientPayload(p); err != nil {
			return err
		}
		if _, err := tx.GetClientByName(p.Name); err == nil {
			return &Error{Kind: Conflict, Code: "client-exists", Message: fmt.Sprintf("API client %q exists", p.Name)}
		}
	case KindClientRevoke:
		var p namePayload
		if err := json.Unmarshal(raw, &p); err != nil {
			return err
		}
		c, err := tx.GetClientByName(p.Name)
		if err != nil {
			return err
		}
		if c.RevokedAt != nil {
			return &Error{Kind: Conflict, Code: "client-revoked", Message: fmt.Sprintf("API client %q is already revoked", p.Name)}
		}
	case KindClientLimits:
		_, err := checkLimitsPayload(tx, raw)
		return err
	case KindModelSet:
		var p modelPayload
		if err := json.Unmarshal(raw, &p); err != nil {
			return err
		}
		return a.checkModelPayload(tx, &p)
	case KindModelTemplate:
		var p templatePayload
		if err := json.Unmarshal(raw, &p); err != nil {
			return err
		}
		_, err := a.checkTemplatePayload(tx, &p)
		return err
	case KindAssertionSign:
		var p signPayload
		if err := json.Unmarshal(raw, &p); err != nil {
			return err
		}
		_, err := a.checkSignPayload(tx, &p)
		return err
	case KindKeyReplicate:
		return a.precheckReplicate(tx, raw)
	case KindQuorumSet:
		_, err := a.checkQuorumValue(tx, raw)
		return err
	case KindSerialRekey:
		_, err := checkRekey(tx, raw)
		return err
	default:
		return badInput("unknown-kind", "unknown proposal kind "+kind)
	}
	return nil
}

func (a *Appliance) checkOfficerRemoval(tx *store.Tx, name string) error {
	o, err := tx.GetOfficerByName(name)
	if err != nil {
		return err
	}
	if o.RevokedAt != nil {
		return &Error{Kind: Conflict, Code: "officer-revoked", Message: fmt.Sprintf("officer %q is already removed", name)}
	}
	n, err := tx.CountActiveOfficers()
	if err != nil {
		return err
	}
	q, err := quorumIn(tx)
	if err != nil {
		return err
	}
	if n-1 < q {
		return &Error{Kind: Conflict, Code: "quorum-unreachable",
			Message: fmt.Sprintf("removing %q would leave %d officers, fewer than the quorum of %d", name, n-1, q)}
	}
	return nil
}

var keyNamePattern = namePattern

func validKeyName(name string) error {
	if !keyNamePattern.MatchString(name) {
		return badInput("invalid-name", fmt.Sprintf("key name %q: use 1-32 characters a-z, 0-9 and '-', starting with a letter", name))
	}
	return nil
}

func keyExists(name string) error {
	return &Error{Kind: Conflict, Code: "key-exists",
		Message: fmt.Sprintf("a key named %q exists; keyrack never replaces keys", name)}
}

// keyTransition says whether a key in state from may undergo kind.
func keyTransition(kind string, from store.KeyState) error {
	ok := false
	switch kind {
	case KindKeyDisable:
		ok = from == store.KeyActive
	case KindKeyEnable:
		ok = from == store.KeyDisabled
	case KindKeyDestroy:
		ok = from == store.KeyActive || from == store.KeyDisabled
	}
	if !ok {
		return &Error{Kind: Conflict, Code: "key-state",
			Message: fmt.Sprintf("%s is not possible for a key that is %s", kind, from)}
	}
	return nil
}

// execute carries out a proposal whose quorum is reached. Token work
// happens between two transactions: the first records the intent (a
// pending key record), the second the result, so that a crash in between
// is found and cleaned up at the next start (reconcile).
func (a *Appliance) execute(ctx context.Context, id, officer string) (Outcome, error) {
	p, err := a.proposalRecord(ctx, id)
	if err != nil {
		return Outcome{}, err
	}
	actor := "officer:" + officer
	var credential string
	var execErr error
	switch p.Kind {
	case KindKeyGenerate, KindKeyImport:
		execErr = a.executeKey(ctx, p, actor)
	case KindKeyDisable, KindKeyEnable:
		execErr = a.executeKeyState(ctx, p, actor)
	case KindKeyDestroy:
		execErr = a.executeKeyDestroy(ctx, p, actor)
	case KindKeyReplicate:
		execErr = a.executeReplicate(ctx, p, actor)
	case KindAssertionSign:
		execErr = a.executeSign(ctx, p, actor)
	case KindOfficerAdd, KindOfficerRemove, KindOfficerRotate, KindClientCreate, KindClientRevoke, KindClientLimits, KindModelSet, KindModelTemplate, KindQuorumSet, KindSerialRekey:
		credential, execErr = a.executePrincipal(ctx, p, actor)
	default:
		execErr = fmt.Errorf("unknown proposal kind %q", p.Kind)
	}
	if execErr != nil {
		a.failProposal(ctx, p, actor, execErr)
		return Outcome{}, execErr
	}
	return a.outcome(ctx, id, true, credential)
}

var errQuorumLost = &Error{Kind: Conflict, Code: "quorum-lost",
	Message: "the proposal no longer has its quorum of approvals by active officers (an approver was removed or changed key); propose it again"}

// quorumCount is how many of p's approvals hold (validApprovals) and the
// quorum on record, both read in tx.
func (a *Appliance) quorumCount(tx *store.Tx, p store.Proposal) (n, quorum int, err error) {
	if n, err = a.validApprovals(tx, p); err != nil {
		return 0, 0, err
	}
	quorum, err = quorumIn(tx)
	return n, quorum, err
}

// checkQuorum counts proposal id's approvals again in tx, the transaction
// that acts on them: only signatures by officers active at this moment
// count.
func (a *Appliance) checkQuorum(tx *store.Tx, id string) error {
	p, err := tx.GetProposal(id)
	if err != nil {
		return err
	}
	n, q, err := a.quorumCount(tx, p)
	if err != nil {
		return err
	}
	if n < q {
		return errQuorumLost
	}
	return nil
}

// failProposal records a failed execution, unless the execution already
// decided the proposal itself.
func (a *Appliance) failProposal(ctx context.Context, p store.Proposal, actor string, cause error) {
	msg := AsError(cause).Message
	err := a.db.Update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		if err := tx.DecideProposal(p.ID, store.ProposalFailed, msg); err != nil {
			return err
		}
		_, err := tx.Audit(actor, p.Kind, p.ID, "failed: "+msg, nil)
		return err
	})
	if err != nil && !errors.Is(err, store.ErrConflict) {
		a.log.Error("recording a failed proposal", "proposal", p.ID, "err", err)
	}
}

func (a *Appliance) executeKey(ctx context.Context, p store.Proposal, actor string) error {
	var kp keyPayload
	if err := json.Unmarshal([]byte(p.Payload), &kp); err != nil {
		return err
	}
	roles, err := parseRoles(kp.Roles)
	if err != nil {
		return err
	}
	ckaID := make([]byte, 16)
	rand.Read(ckaID)
	origin := "generated"
	if p.Kind == KindKeyImport {
		origin = "imported"
	}
	// 1. The intent, durable before the token is touched.
	err = a.db.Update(ctx, func(tx *store.Tx) error {
		if err := a.checkQuorum(tx, p.ID); err != nil {
			return err
		}
		if err := tx.InsertKey(store.Key{Name: kp.Name, CKAID: ckaID, Origin: origin, Roles: roles.canonical,
			State: store.KeyPending, ProposalID: p.ID}); err != nil {
			if errors.Is(err, store.ErrExists) {
				return keyExists(kp.Name)
			}
			return err
		}
		_, err := tx.Audit(actor, p.Kind+".begin", kp.Name, "ok", map[string]any{"proposal": p.ID, "cka_id": hex.EncodeToString(ckaID)})
		return err
	})
	if err != nil {
		return err
	}
	// 2. The token.
	var k *hsm.Key
	ctx = context.WithoutCancel(ctx) // a ceremony half-done by a client hang-up helps no one
	if p.Kind == KindKeyGenerate {
		k, err = a.mod.GenerateRSA(ctx, hsm.KeySpec{Label: kp.Name, ID: ckaID, Bits: 4096, Usage: hsm.UsageSign})
	} else {
		k, err = a.mod.ImportWrapped(ctx, a.importKey, kp.Blob, hsm.ImportSpec{Label: kp.Name, ID: ckaID, MinBits: 4096})
	}
	if err != nil {
		a.abandonKey(ctx, p, kp.Name, actor, err)
		return err
	}
	// 3. The result, if the token holds the key the officers approved.
	pub := k.Info().Public
	keyID, err := snapKeyID(pub)
	if err == nil && kp.KeyID != "" && keyID != kp.KeyID {
		err = &Error{Kind: BadInput, Code: "wrong-key",
			Message: fmt.Sprintf("the wrapped key is %s, not the key %s the proposal names; nothing was imported", keyID, kp.KeyID)}
	}
	if err == nil {
		var der []byte
		der, err = x509.MarshalPKIXPublicKey(pub)
		if err == nil {
			err = a.db.Update(ctx, func(tx *store.Tx) error {
				if err := tx.ActivateKey(kp.Name, keyID, der, k.Info().Bits); err != nil {
					return err
				}
				if err := tx.DecideProposal(p.ID, store.ProposalExecuted, "key "+kp.Name+" "+keyID); err != nil {
					return err
				}
				_, err := tx.Audit(actor, p.Kind, kp.Name, "ok", map[string]any{"proposal": p.ID, "key_id": keyID,
					"bits": k.Info().Bits, "origin": origin, "source": kp.Source, "fingerprint": kp.Fingerprint})
				return err
			})
		}
	}
	if err != nil {
		// No record may end without its object or the reverse: undo.
		if derr := a.mod.DestroyKey(ctx, ckaID); derr != nil {
			a.log.Error("undoing a key whose record failed", "key", kp.Name, "err", derr)
		}
		a.abandonKey(ctx, p, kp.Name, actor, err)
		return err
	}
	return nil
}

// abandonKey marks a pending key record failed together with its proposal.
func (a *Appliance) abandonKey(ctx context.Context, p store.Proposal, name, actor string, cause error) {
	msg := AsError(cause).Message
	err := a.db.Update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		if err := tx.SetKeyState(name, store.KeyPending, store.KeyFailed); err != nil {
			return err
		}
		if err := tx.DecideProposal(p.ID, store.ProposalFailed, msg); err != nil {
			return err
		}
		_, err := tx.Audit(actor, p.Kind, name, "failed: "+msg, map[string]any{"proposal": p.ID})
		return err
	})
	if err != nil {
		a.log.Error("recording a failed key ceremony", "key", name, "err", err)
	}
}

func (a *Appliance) executeKeyState(ctx context.Context, p store.Proposal, actor string) error {
	var np namePayload
	if err := json.Unmarshal([]byte(p.Payload), &np); err != nil {
		return err
	}
	from, to := store.KeyActive, store.KeyDisabled
	if p.Kind == KindKeyEnable {
		from, to = store.KeyDisabled, store.KeyActive
	}
	return a.db.Update(ctx, func(tx *store.Tx) error {
		if err := a.checkQuorum(tx, p.ID); err != nil {
			return err
		}
		k, err := tx.GetKey(np.Name)
		if err != nil {
			return err
		}
		if err := keyTransition(p.Kind, k.State); err != nil {
			return err
		}
		if err := tx.SetKeyState(np.Name, from, to); err != nil {
			return err
		}
		if err := tx.DecideProposal(p.ID, store.ProposalExecuted, fmt.Sprintf("key %s %s", np.Name, to)); err != nil {
			return err
		}
		_, err = tx.Audit(actor, p.Kind, np.Name, "ok", map[string]any{"proposal": p.ID, "key_id": k.KeyID})
		return err
	})
}

// executeKeyDestroy first disables the key (so it signs nothing even if
// the token call fails), then destroys the token objects, then records it.
func (a *Appliance) executeKeyDestroy(ctx context.Context, p store.Proposal, actor string) error {
	var np namePayload
	if err := json.Unmarshal([]byte(p.Payload), &np); err != nil {
		return err
	}
	var k store.Key
	err := a.db.Update(ctx, func(tx *store.Tx) error {
		if err := a.checkQuorum(tx, p.ID); err != nil {
			return err
		}
		var err error
		if k, err = tx.GetKey(np.Name); err != nil {
			return err
		}
		if err := keyTransition(p.Kind, k.State); err != nil {
			return err
		}
		if k.State == store.KeyActive {
			if err := tx.SetKeyState(np.Name, store.KeyActive, store.KeyDisabled); err != nil {
				return err
			}
		}
		_, err = tx.Audit(actor, p.Kind+".begin", np.Name, "ok", map[string]any{"proposal": p.ID, "key_id": k.KeyID})
		return err
	})
	if err != nil {
		return err
	}
	ctx = context.WithoutCancel(ctx)
	if err := a.mod.DestroyKey(ctx, k.CKAID); err != nil && !errors.Is(err, hsm.ErrKeyNotFound) {
		return err
	}
	return a.db.Update(ctx, func(tx *store.Tx) error {
		if err := tx.SetKeyState(np.Name, store.KeyDisabled, store.KeyDestroyed); err != nil {
			return err
		}
		if err := tx.DecideProposal(p.ID, store.ProposalExecuted, "key "+np.Name+" destroyed"); err != nil {
			return err
		}
		_, err := tx.Audit(actor, p.Kind, np.Name, "ok", map[string]any{"proposal": p.ID, "key_id": k.KeyID})
		return err
	})
}

func (a *Appliance) executePrincipal(ctx context.Context, p store.Proposal, actor string) (string, error) {
	var credential string
	err := a.db.Update(ctx, func(tx *store.Tx) error {
		if err := a.checkQuorum(tx, p.ID); err != nil {
			return err
		}
		var subject string
		var details map[string]any
		switch p.Kind {
		case KindOfficerAdd, KindOfficerRotate:
			var op officerPayload
			if err := json.Unmarshal([]byte(p.Payload), &op); err != nil {
				return err
			}
			pub, err := parseOfficerKey(op.PublicKey)
			if err != nil {
				return err
			}
			if err := checkKeyUnused(tx, pub, ""); err != nil {
				return err
			}
			if p.Kind == KindOfficerAdd {
				_, err = tx.InsertOfficer(op.Name, officerkey.Authorized(pub), op.CertSHA256)
			} else {
				cert := op.CertSHA256
				if cert == "" {
					var o store.Officer
					if o, err = tx.GetOfficerByName(op.Name); err != nil {
						return err
					}
					cert = o.CertSHA256
				}
				// The old key's sessions end with it.
				if err = tx.SetOfficerKey(op.Name, officerkey.Authorized(pub), cert); err == nil {
					err = tx.EndSessions(op.Name)
				}
			}
			if err != nil {
				return err
			}
			subject = op.Name
			details = map[string]any{"public_key": officerkey.Authorized(pub), "fingerprint": officerkey.Fingerprint(pub)}
		case KindOfficerRemove:
			var np namePayload
			if err := json.Unmarshal([]byte(p.Payload), &np); err != nil {
				return err
			}
			if err := a.checkOfficerRemoval(tx, np.Name); err != nil {
				return err
			}
			if err := tx.RevokeOfficer(np.Name); err != nil {
				return err
			}
			// What the removed officer approved or proposed stops counting
			// now, and their sessions end.
			cancelled, err := tx.VoidApprovals(np.Name, "cancelled: its proposer "+np.Name+" was removed")
			if err != nil {
				return err
			}
			if err := tx.EndSessions(np.Name); err != nil {
				return err
			}
			subject = np.Name
			details = map[string]any{"cancelled": cancelled}
		case KindClientCreate:
			var cp clientPayload
			if err := json.Unmarshal([]byte(p.Payload), &cp); err != nil {
				return err
			}
			kind, err := checkClientPayload(cp)
			if err != nil {
				return err
			}
			tok, hash, err := newCredential(clientPrefix, cp.Name)
			if err != nil {
				return err
			}
			rec, err := storeClient(cp, kind, hash)
			if err != nil {
				return err
			}
			if err := tx.InsertClient(rec); err != nil {
				return err
			}
			credential, subject = tok, cp.Name
			details = map[string]any{"brand": cp.Brand, "models": cp.Models, "types": cp.Types, "kind": rec.Kind}
			if rec.CertSHA256 != "" {
				details["client_cert_sha256"] = rec.CertSHA256
			}
			if rec.Limits != "" {
				details["limits"] = json.RawMessage(rec.Limits)
			}
		case KindClientLimits:
			var err error
			if subject, details, err = executeClientLimits(tx, p); err != nil {
				return err
			}
		case KindModelSet:
			var err error
			if subject, details, err = a.executeModelSet(tx, p); err != nil {
				return err
			}
		case KindSerialRekey:
			var err error
			if subject, details, err = a.executeRekey(tx, p); err != nil {
				return err
			}
		case KindModelTemplate:
			var err error
			if subject, details, err = a.executeModelTemplate(tx, p); err != nil {
				return err
			}
		case KindQuorumSet:
			q, err := a.checkQuorumValue(tx, []byte(p.Payload))
			if err != nil {
				return err
			}
			if err := tx.ChangeSetting(quorumSetting, strconv.Itoa(q)); err != nil {
				return err
			}
			subject, details = strconv.Itoa(q), map[string]any{"quorum": q}
		case KindClientRevoke:
			var np namePayload
			if err := json.Unmarshal([]byte(p.Payload), &np); err != nil {
				return err
			}
			if err := tx.RevokeClient(np.Name); err != nil {
				return err
			}
			subject = np.Name
		}
		if err := tx.DecideProposal(p.ID, store.ProposalExecuted, p.Kind+" "+subject); err != nil {
			return err
		}
		if details == nil {
			details = map[string]any{}
		}
		details["proposal"] = p.ID
		_, err := tx.Audit(actor, p.Kind, subject, "ok", details)
		return err
	})
	if err != nil {
		return "", err
	}
	return credential, nil
}
