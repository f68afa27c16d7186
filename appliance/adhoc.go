package appliance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance/assertion"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
	"github.com/keyrack/keyrack/policy"
)

// KindAssertionSign signs one assertion an officer wrote, as `snap sign -k
// KEY` would, once the quorum approves exactly its content: `keyrack sign`.
const KindAssertionSign = "assertion.sign"

// signPayload is what officers approve: the key, the statement as the
// file said it, and the assertion content the token will sign, byte for
// byte (everything but the signature).
type signPayload struct {
	Key       string `json:"key"`
	KeyID     string `json:"sign-key-sha3-384"`
	Type      string `json:"type"`
	Statement string `json:"statement"`
	Content   string `json:"content"`
}

// signCheck is a validated assertion.sign payload.
type signCheck struct {
	key     store.Key
	typ     policy.AssertionType
	st      assertion.Statement
	content []byte
}

// checkSignPayload validates an ad-hoc signature against the current
// state: the key exists and is active, its roles allow the assertion (the
// account-key constraints the roles register, with snapd's semantics), the
// authority is the account of the key's account-key when the appliance
// holds it, snapd would accept the assertion, and the content is the one
// the payload names.
func (a *Appliance) checkSignPayload(tx *store.Tx, p *signPayload) (signCheck, error) {
	var c signCheck
	if err := validKeyName(p.Key); err != nil {
		return c, err
	}
	k, err := tx.GetKey(p.Key)
	if errors.Is(err, store.ErrNotFound) {
		return c, &Error{Kind: NotFound, Code: "no-such-key", Message: fmt.Sprintf("no key named %q", p.Key), Err: err}
	}
	if err != nil {
		return c, err
	}
	if k.State != store.KeyActive {
		return c, &Error{Kind: Conflict, Code: "key-state", Message: fmt.Sprintf("key %q is %s", p.Key, k.State)}
	}
	if p.KeyID != k.KeyID {
		return c, badInput("wrong-key", fmt.Sprintf("key %q is %s, not the key %s the proposal names", p.Key, k.KeyID, p.KeyID))
	}
	st, err := assertion.ParseStatement([]byte(p.Statement))
	if err != nil {
		return c, badInput("invalid-statement", err.Error())
	}
	if p.Type != st.Type.Name {
		return c, badInput("invalid-statement", fmt.Sprintf("the statement is a %s assertion, not %s", st.Type.Name, p.Type))
	}
	t, err := policy.ParseType(st.Type.Name)
	if err != nil {
		return c, &Error{Kind: Refused, Code: policy.RuleKeyType, Err: err,
			Message: fmt.Sprintf("%s: key %q: a key's roles name serial, model, system-user or preseed assertions; a %s assertion is outside every role",
				policy.RuleKeyType, p.Key, st.Type.Name)}
	}
	if err := keyAllows(k, t, st.Headers); err != nil {
		return c, err
	}
	if len(k.AccountKey) > 0 {
		ak, err := asserts.Decode(k.AccountKey)
		if err != nil {
			return c, fmt.Errorf("key %q: stored account-key: %w", p.Key, err)
		}
		if acc, ok := ak.(*asserts.AccountKey); ok && st.Headers["authority-id"] != acc.AccountID() {
			return c, refused("authority-id", fmt.Sprintf("authority-id %v is not %q, the account of key %q's account-key: devices would refuse the signature",
				st.Headers["authority-id"], acc.AccountID(), p.Key))
		}
	}
	content, err := assertion.Content(st.Type, st.Headers, st.Body, k.KeyID)
	if err != nil {
		return c, badInput("invalid-statement", err.Error())
	}
	if p.Content != string(content) {
		return c, errContentChanged
	}
	return signCheck{key: k, typ: t, st: st, content: content}, nil
}

// ProposeSign proposes signing the statement req carries with key
// req.Key. Officers approve the exact content to be signed.
func (a *Appliance) ProposeSign(ctx context.Context, officer string, req wire.SignRequest) (out Outcome, err error) {
	defer a.auditRefusal(ctx, officer, "proposal.create", KindAssertionSign, &err)
	st, err := assertion.ParseStatement([]byte(req.Statement))
	if err != nil {
		return Outcome{}, badInput("invalid-statement", err.Error())
	}
	if err := validKeyName(req.Key); err != nil {
		return Outcome{}, err
	}
	k, err := a.keyRecord(ctx, req.Key)
	if errors.Is(err, store.ErrNotFound) {
		return Outcome{}, &Error{Kind: NotFound, Code: "no-such-key", Message: fmt.Sprintf("no key named %q", req.Key), Err: err}
	}
	if err != nil {
		return Outcome{}, err
	}
	// The content is made here for the payload, and again with every
	// check in the proposal's transaction (precheck), which names the
	// first problem (the key's state, its roles, then the content) if
	// this fails.
	content, _ := assertion.Content(st.Type, st.Headers, st.Body, k.KeyID)
	return a.propose(ctx, officer, KindAssertionSign,
		fmt.Sprintf("sign a %s assertion (%s) with key %s, exactly the content shown", st.Type.Name, describeAssertion(st), req.Key),
		signPayload{Key: req.Key, KeyID: k.KeyID, Type: st.Type.Name, Statement: req.Statement, Content: string(content)})
}

// describeAssertion names an assertion by its primary key, for summaries.
func describeAssertion(st assertion.Statement) string {
	var parts []string
	for _, h := range st.Type.PrimaryKey {
		if v, ok := st.Headers[h].(string); ok {
			parts = append(parts, h+" "+v)
		}
	}
	return strings.Join(parts, ", ")
}

// executeSign signs an approved assertion.sign proposal: its payload is
// checked again, the token signs, and the signature is kept, logged and
// audited, and the proposal decided, in one transaction that counts the
// quorum again. Only then can an officer fetch it (SignedAssertion).
func (a *Appliance) executeSign(ctx context.Context, p store.Proposal, actor string) error {
	var sp signPayload
	if err := json.Unmarshal([]byte(p.Payload), &sp); err != nil {
		return err
	}
	var c signCheck
	err := a.db.View(ctx, func(tx *store.Tx) error {
		if err := a.checkQuorum(tx, p.ID); err != nil {
			return err
		}
		var err error
		c, err = a.checkSignPayload(tx, &sp)
		return err
	})
	if err != nil {
		return err
	}
	ctx = context.WithoutCancel(ctx) // the quorum is spent: a client hang-up stops nothing
	k, err := a.keySigner(ctx, c.key)
	if err != nil {
		return err
	}
	signed, err := k.signer.Sign(c.st.Type, c.st.Headers, c.st.Body)
	a.signatureMade(ctx, c.typ, c.key.KeyID, err)
	if err != nil {
		return signingError(err, "invalid-statement")
	}
	// The self-check already holds the content to the one assembled;
	// what leaves must also be what the officers approved.
	if !bytes.Equal(assertion.ContentOf(signed), []byte(sp.Content)) {
		return fmt.Errorf("proposal %s: the signed content is not the approved content", p.ID)
	}
	e := adhocLogEntry(c, "proposal:"+p.ID, digest(signed.Bytes))
	subject := e.Brand + "/" + e.Model
	err = a.db.Update(ctx, func(tx *store.Tx) error {
		if err := a.checkQuorum(tx, p.ID); err != nil {
			return err
		}
		st, err := tx.KeyStateOf(c.key.Name)
		if err != nil {
			return err
		}
		if st != store.KeyActive {
			return &Error{Kind: Refused, Code: "key-not-active",
				Message: fmt.Sprintf("key %s became %s while signing; the signature was discarded", c.key.Name, st)}
		}
		if err := tx.PutSignedAssertion(p.ID, signed.Bytes); err != nil {
			return err
		}
		id, err := tx.LogSignature(e)
		if err != nil {
			return err
		}
		if err := tx.DecideProposal(p.ID, store.ProposalExecuted,
			fmt.Sprintf("signed %s %s with key %s (digest %s)", sp.Type, subject, c.key.Name, e.Digest)); err != nil {
			return err
		}
		_, err = tx.Audit(actor, KindAssertionSign, subject, "ok", map[string]any{"proposal": p.ID, "log_id": id,
			"key_id": c.key.KeyID, "digest": e.Digest, "type": sp.Type})
		return err
	})
	if err != nil {
		// The token signed and nothing left: the chain says so, with the
		// digest, and the proposal fails with it.
		msg := AsError(err).Message
		aerr := a.db.Update(ctx, func(tx *store.Tx) error {
			if err := tx.DecideProposal(p.ID, store.ProposalFailed, msg); err != nil {
				return err
			}
			_, err := tx.Audit(actor, KindAssertionSign, subject, "discarded: "+msg,
				map[string]any{"proposal": p.ID, "key_id": c.key.KeyID, "digest": e.Digest})
			return err
		})
		if aerr != nil && !errors.Is(aerr, store.ErrConflict) {
			a.log.Error("auditing a discarded ad-hoc signature", "proposal", p.ID, "err", aerr)
		}
		return err
	}
	return nil
}

// adhocLogEntry is the signing-log row of an ad-hoc signature: the brand
// (or the authority), the model or models, the serial, the revision.
func adhocLogEntry(c signCheck, client, dig string) store.LogEntry {
	h := c.st.Headers
	str := func(n string) string { s, _ := h[n].(string); return s }
	e := store.LogEntry{Type: string(c.typ), KeyID: c.key.KeyID, Brand: str("brand-id"), Model: str("model"),
		Serial: str("serial"), Client: client, Digest: dig}
	if e.Brand == "" {
		e.Brand = str("authority-id")
	}
	if ms, ok := h["models"].([]any); ok {
		names := make([]string, 0, len(ms))
		for _, m := range ms {
			if s, ok := m.(string); ok {
				names = append(names, s)
			}
		}
		e.Model = joinModels(names)
	}
	if n, err := strconv.Atoi(str("revision")); err == nil {
		e.Revision = n
	}
	return e
}

// keySigner is a signer for key record rec, through the token, bound to
// ctx (as keyFor makes one for a model's binding).
func (a *Appliance) keySigner(ctx context.Context, rec store.Key) (*signingKey, error) {
	r, err := a.cachedRoles(rec)
	if err != nil {
		return nil, err
	}
	hk, err := a.cachedTokenKey(ctx, rec)
	if err != nil {
		return nil, err
	}
	a.cache.mu.Lock()
	proto := a.cache.signers[rec.KeyID]
	a.cache.mu.Unlock()
	if proto == nil {
		if proto, err = assertion.NewSigner(hk); err != nil {
			return nil, err
		}
		a.cache.mu.Lock()
		a.cache.signers[rec.KeyID] = proto
		a.cache.mu.Unlock()
	}
	signer, err := proto.Rebind(hk.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	return &signingKey{rec: rec, roles: r, signer: signer}, nil
}

var errNotSigned = &Error{Kind: Conflict, Code: "not-signed"}

// SignedAssertion returns the assertion an executed assertion.sign
// proposal made: only the signed assertion, for the officers.
func (a *Appliance) SignedAssertion(ctx context.Context, id string) ([]byte, error) {
	var out []byte
	err := a.db.ViewDurable(ctx, func(tx *store.Tx) error {
		p, err := tx.GetProposal(id)
		if err != nil {
			return err
		}
		if p.Kind != KindAssertionSign {
			return &Error{Kind: NotFound, Code: "not-a-signature",
				Message: fmt.Sprintf("proposal %s is a %s ceremony, not an assertion.sign: it signed no assertion", id, p.Kind)}
		}
		if p.State != store.ProposalExecuted {
			e := *errNotSigned
			e.Message = fmt.Sprintf("proposal %s is %s (%d approvals): nothing is signed yet", id, p.State, len(p.Approvals))
			if p.Result != "" {
				e.Message = fmt.Sprintf("proposal %s is %s: %s", id, p.State, p.Result)
			}
			return &e
		}
		out, err = tx.GetSignedAssertion(id)
		return err
	})
	return out, err
}
