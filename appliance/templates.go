package appliance

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance/assertion"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
	"github.com/keyrack/keyrack/policy"
)

// KindModelTemplate approves the model assertion a model's signing
// clients may obtain: the exact headers of a `snap sign` statement. A
// client then asks for the template by name and the appliance sets only
// timestamp and revision. It is a ceremony because a model assertion
// decides what a device runs and who may log into it (grade,
// system-user-authority, serial-authority, store, snaps): no client may
// choose those.
const KindModelTemplate = "model.template"

// templatePayload is what officers approve: the statement as the file
// said it, and the headers and body read from it (what is signed).
type templatePayload struct {
	Brand     string         `json:"brand"`
	Model     string         `json:"model"`
	Statement string         `json:"statement"`
	Headers   map[string]any `json:"headers"`
	Body      string         `json:"body,omitempty"`
}

// signerSetHeaders are the signer's (the key, the body's length): a
// template naming them would approve what the appliance decides at each
// signature, as it decides timestamp and revision.
var signerSetHeaders = []string{"sign-key-sha3-384", "body-length"}

var (
	errTemplateOnly = refused("template-only",
		`model assertions are signed only from templates officers approved: send {"brand-id": BRAND, "model": MODEL} naming one; `+
			`headers and a body of your own are not signed (officers propose a template with keyrack models template)`)
	errTemplateChanged = &Error{Kind: Conflict, Code: "template-changed",
		Message: "the model template on record is not the one officers approved (its record was changed); nothing was signed: officers propose the template again"}
	// errRevisionTaken: another signature took the revision meanwhile;
	// the signing path tries again with the next one.
	errRevisionTaken = &Error{Kind: Unavailable, Code: "revision-taken", RetryAfter: time.Second,
		Message: "concurrent signatures of this model template took every revision tried; retry"}
)

func noTemplate(brand, model string) error {
	return &Error{Kind: NotFound, Code: "no-model-template",
		Message: fmt.Sprintf("no officer-approved model template for %s/%s: officers propose one with keyrack models template %s %s -file model.json", brand, model, brand, model)}
}

// checkTemplatePayload validates a template against the current state: a
// model assertion snapd accepts, of the brand (authority-id and brand-id),
// for the model named, which the key bound to the model for type model
// exists, is active and may sign by its roles. It returns the statement
// read from p.Statement, which must agree with p.Headers and p.Body.
func (a *Appliance) checkTemplatePayload(tx *store.Tx, p *templatePayload) (assertion.Statement, error) {
	if err := policy.ValidBrandID(p.Brand); err != nil {
		return assertion.Statement{}, badInput("invalid-argument", err.Error())
	}
	if err := policy.ValidModelName(p.Model); err != nil {
		return assertion.Statement{}, badInput("invalid-argument", err.Error())
	}
	st, err := assertion.ParseStatement([]byte(p.Statement))
	if err != nil {
		return st, badInput("invalid-statement", err.Error())
	}
	if st.Type != asserts.ModelType {
		return st, badInput("invalid-statement", fmt.Sprintf(`a model template is a model assertion: its type is "model", not %q`, st.Type.Name))
	}
	if !sameJSON(st.Headers, p.Headers) || string(st.Body) != p.Body {
		return st, badInput("invalid-statement", "the headers and body of the proposal are not those of its statement")
	}
	for _, h := range []string{"authority-id", "brand-id"} {
		if v, _ := st.Headers[h].(string); v != p.Brand {
			return st, badInput("template-brand", fmt.Sprintf("%s must be the brand %q (a model assertion is signed by its brand), not %v", h, p.Brand, st.Headers[h]))
		}
	}
	if v, _ := st.Headers["model"].(string); v != p.Model {
		return st, badInput("template-model", fmt.Sprintf("the statement's model header is %v, not %q", st.Headers["model"], p.Model))
	}
	for _, h := range signerSetHeaders {
		if _, ok := st.Headers[h]; ok {
			return st, badInput("invalid-statement", fmt.Sprintf("%s is set when the appliance signs; leave it out of the template", h))
		}
	}
	if _, err := templateFloor(st.Headers); err != nil {
		return st, err
	}
	mc, err := tx.GetModel(p.Brand, p.Model)
	if errors.Is(err, store.ErrNotFound) {
		e := *errNoSuchModel
		e.Message = fmt.Sprintf("model %s/%s is not set up on this appliance: bind it to its keys first (keyrack models set)", p.Brand, p.Model)
		return st, &e
	}
	if err != nil {
		return st, err
	}
	name, ok := mc.Keys[string(policy.Model)]
	if !ok {
		return st, refused("no-key-for-type", fmt.Sprintf("model %s/%s has no key bound for model assertions (keyrack models set ... -key model=KEY)", p.Brand, p.Model))
	}
	k, err := tx.GetKey(name)
	if err != nil {
		return st, err
	}
	if k.State != store.KeyActive {
		return st, &Error{Kind: Conflict, Code: "key-state", Message: fmt.Sprintf("key %q, bound to sign model %s/%s, is %s", name, p.Brand, p.Model, k.State)}
	}
	if err := keyAllows(k, policy.Model, st.Headers); err != nil {
		return st, err
	}
	// What the first signature will be, as snapd's decoder sees it.
	h := make(map[string]any, len(st.Headers)+1)
	for n, v := range st.Headers {
		h[n] = v
	}
	h["timestamp"] = time.Now().UTC().Format(time.RFC3339)
	if _, err := assertion.Content(asserts.ModelType, h, st.Body, k.KeyID); err != nil {
		return st, badInput("invalid-statement", err.Error())
	}
	return st, nil
}

// keyAllows checks k's roles for an assertion of type t with headers, as
// snapd checks an account-key's constraints; the refusal names the rule
// and the key.
func keyAllows(k store.Key, t policy.AssertionType, headers map[string]any) error {
	r, err := parseRoles(json.RawMessage(k.Roles))
	if err != nil {
		return fmt.Errorf("key %q has unreadable roles: %w", k.Name, err)
	}
	if err := r.scope.Check(t, headers); err != nil {
		var rf *policy.Refusal
		if errors.As(err, &rf) {
			return &Error{Kind: Refused, Code: rf.Rule, Message: fmt.Sprintf("%s: key %q: %s", rf.Rule, k.Name, rf.Message), Err: err}
		}
		return err
	}
	return nil
}

// templateFloor is the revision a template's statement names (0 if none):
// no signature of the template carries a lower one.
func templateFloor(h map[string]any) (int64, error) {
	v, ok := h["revision"]
	if !ok {
		return 0, nil
	}
	s, _ := v.(string)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || (len(s) > 1 && s[0] == '0') || s[0] == '+' {
		return 0, badInput("invalid-statement", fmt.Sprintf("revision must be a non-negative decimal integer, not %v", v))
	}
	return n, nil
}

func sameJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

// ProposeModelTemplate proposes the model template of brand/model, or its
// replacement.
func (a *Appliance) ProposeModelTemplate(ctx context.Context, officer string, req wire.TemplateRequest) (out Outcome, err error) {
	defer a.auditRefusal(ctx, officer, "proposal.create", KindModelTemplate, &err)
	st, err := assertion.ParseStatement([]byte(req.Statement))
	if err != nil {
		return Outcome{}, badInput("invalid-statement", err.Error())
	}
	grade, _ := st.Headers["grade"].(string)
	if grade == "" {
		grade = "none (core16/18 style)"
	}
	return a.propose(ctx, officer, KindModelTemplate,
		fmt.Sprintf("model template for %s/%s (grade %s): signed with exactly these headers, timestamp and a growing revision set at each signature",
			req.Brand, req.Model, grade),
		templatePayload{Brand: req.Brand, Model: req.Model, Statement: req.Statement, Headers: st.Headers, Body: string(st.Body)})
}

func (a *Appliance) executeModelTemplate(tx *store.Tx, p store.Proposal) (string, map[string]any, error) {
	var tp templatePayload
	if err := json.Unmarshal([]byte(p.Payload), &tp); err != nil {
		return "", nil, err
	}
	st, err := a.checkTemplatePayload(tx, &tp)
	if err != nil {
		return "", nil, err
	}
	headers, err := json.Marshal(st.Headers)
	if err != nil {
		return "", nil, err
	}
	if err := tx.PutModelTemplate(store.ModelTemplate{Brand: tp.Brand, Model: tp.Model, Headers: string(headers),
		Body: string(st.Body), ProposalID: p.ID}); err != nil {
		return "", nil, err
	}
	sum := sha256.Sum256(headers)
	return tp.Brand + "/" + tp.Model, map[string]any{"headers-sha256": hex.EncodeToString(sum[:])}, nil
}

// approvedTemplate returns brand/model's template and the statement
// officers approved for it, after checking that the record is theirs: the
// template row names an executed model.template proposal for this model,
// whose record makes again the content its approvers signed (as
// ceremonies check it, content-changed), and whose headers and body are
// the row's. A row edited in the store after the approval, or pointed at
// another proposal, signs nothing.
func (a *Appliance) approvedTemplate(tx *store.Tx, brand, model string) (store.ModelTemplate, assertion.Statement, error) {
	tpl, err := tx.GetModelTemplate(brand, model)
	if errors.Is(err, store.ErrNotFound) {
		return tpl, assertion.Statement{}, noTemplate(brand, model)
	}
	if err != nil {
		return tpl, assertion.Statement{}, err
	}
	p, err := tx.GetProposal(tpl.ProposalID)
	if errors.Is(err, store.ErrNotFound) {
		return tpl, assertion.Statement{}, errTemplateChanged
	}
	if err != nil {
		return tpl, assertion.Statement{}, err
	}
	if p.Kind != KindModelTemplate || p.State != store.ProposalExecuted {
		return tpl, assertion.Statement{}, errTemplateChanged
	}
	content, err := a.contentOf(p)
	if err != nil || content != p.Content {
		return tpl, assertion.Statement{}, errTemplateChanged
	}
	var tp templatePayload
	if err := json.Unmarshal([]byte(p.Payload), &tp); err != nil || tp.Brand != brand || tp.Model != model {
		return tpl, assertion.Statement{}, errTemplateChanged
	}
	st, err := assertion.ParseStatement([]byte(tp.Statement))
	if err != nil || st.Type != asserts.ModelType {
		return tpl, assertion.Statement{}, errTemplateChanged
	}
	headers, err := json.Marshal(st.Headers)
	if err != nil || string(headers) != tpl.Headers || string(st.Body) != tpl.Body || !sameJSON(st.Headers, tp.Headers) {
		return tpl, assertion.Statement{}, errTemplateChanged
	}
	return tpl, st, nil
}

// nextRevision is the revision the next signature of brand/model's
// template carries: above every revision signed for the model, whether the
// counter says so or the signing log does (so a counter lowered in the
// store does not bring a revision back), and not below the statement's.
func nextRevision(tx *store.Tx, tpl store.ModelTemplate, st assertion.Statement) (int64, error) {
	logged, err := tx.MaxLoggedRevision(string(policy.Model), tpl.Brand, tpl.Model)
	if err != nil {
		return 0, err
	}
	floor, err := templateFloor(st.Headers)
	if err != nil {
		return 0, err
	}
	return max(max(tpl.LastRevision, logged)+1, floor), nil
}

// ListModelTemplates lists the approved model templates.
func (a *Appliance) ListModelTemplates(ctx context.Context) ([]wire.Template, error) {
	var ts []store.ModelTemplate
	if err := a.db.View(ctx, func(tx *store.Tx) error {
		var err error
		ts, err = tx.ListModelTemplates()
		return err
	}); err != nil {
		return nil, err
	}
	out := make([]wire.Template, 0, len(ts))
	for _, t := range ts {
		var h map[string]any
		if err := json.Unmarshal([]byte(t.Headers), &h); err != nil {
			return nil, fmt.Errorf("model template %s/%s: headers: %w", t.Brand, t.Model, err)
		}
		out = append(out, wire.Template{Brand: t.Brand, Model: t.Model, Headers: h, Body: t.Body, Proposal: t.ProposalID,
			LastRevision: t.LastRevision, UpdatedAt: t.UpdatedAt})
	}
	return out, nil
}

// templateRequest is the payload proposing statement as brand/model's
// template; a statement that does not parse is left for precheck to
// refuse with its reason.
func templateRequest(brand, model, statement string) templatePayload {
	st, _ := assertion.ParseStatement([]byte(statement))
	return templatePayload{Brand: brand, Model: model, Statement: statement, Headers: st.Headers, Body: string(st.Body)}
}
