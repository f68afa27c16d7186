package appliance

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/keyrack/keyrack/appliance/assertion"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
	"github.com/keyrack/keyrack/policy"
	"github.com/snapcore/snapd/asserts"
)

func publicKeyOf(k store.Key) (*rsa.PublicKey, error) {
	pub, err := x509.ParsePKIXPublicKey(k.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("key %q: stored public key: %w", k.Name, err)
	}
	rp, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("key %q is not RSA", k.Name)
	}
	return rp, nil
}

// SignModel signs the model template officers approved for a model of
// the client's brand, with the key bound to the model's "model" role. The
// client names the template; the appliance sets only timestamp and a
// revision above every one signed for the model before, counted in the
// store and advanced in the transaction that records the signature.
func (a *Appliance) SignModel(ctx context.Context, cl *Client, req wire.ModelSignRequest) (asserts.Assertion, error) {
	if len(req.Headers) > 0 || req.Body != "" {
		a.metrics.refusals.WithLabelValues("template-only").Inc()
		return nil, errTemplateOnly
	}
	if req.Model == "" {
		return nil, badInput("invalid-argument", `model is required: {"brand-id": BRAND, "model": MODEL} names the model template to sign`)
	}
	brand := cl.scope.Brand()
	if req.BrandID != "" {
		brand = req.BrandID
	}
	if err := cl.scope.Check(brand, []string{req.Model}, policy.Model); err != nil {
		a.metrics.refusals.WithLabelValues(refusalRule(err)).Inc()
		return nil, err
	}
	model := req.Model
	// A few tries: a signature whose revision a concurrent one took (on
	// another appliance sharing the store, or here) is discarded, and
	// signed again with the next revision.
	for try := 0; try < 4; try++ {
		var tpl store.ModelTemplate
		var st assertion.Statement
		var rev int64
		err := a.db.View(ctx, func(tx *store.Tx) error {
			var err error
			if tpl, st, err = a.approvedTemplate(tx, brand, model); err != nil {
				return err
			}
			rev, err = nextRevision(tx, tpl, st)
			return err
		})
		if errors.Is(err, errTemplateChanged) {
			a.templateRefused(ctx, cl.name, brand, model)
		}
		if err != nil {
			return nil, err
		}
		k, _, err := a.keyFor(ctx, cl.name, brand, model, policy.Model, st.Headers)
		if err != nil {
			return nil, err
		}
		h := make(map[string]any, len(st.Headers)+2)
		for n, v := range st.Headers {
			h[n] = v
		}
		h["timestamp"] = time.Now().UTC().Format(time.RFC3339)
		h["revision"] = strconv.FormatInt(rev, 10)
		if rev == 0 {
			delete(h, "revision")
		}
		signed, err := k.signer.Sign(asserts.ModelType, h, st.Body)
		a.signatureMade(ctx, policy.Model, k.rec.KeyID, err)
		if err != nil {
			return nil, signingError(err, "invalid-statement")
		}
		out, err := a.recordWith(ctx, cl.name, policy.Model, k, store.LogEntry{Brand: brand, Model: model, Revision: int(rev)}, signed,
			recordHooks{
				check: func(tx *store.Tx) error {
					now, _, err := a.approvedTemplate(tx, brand, model)
					if err != nil {
						if errors.Is(err, errTemplateChanged) || errors.As(err, new(*Error)) {
							return &discarded{reason: "the model template changed while signing", err: errTemplateChanged}
						}
						return err
					}
					if now.ProposalID != tpl.ProposalID {
						return &discarded{reason: "the model template was replaced while signing", err: errRevisionTaken}
					}
					logged, err := tx.MaxLoggedRevision(string(policy.Model), brand, model)
					if err != nil {
						return err
					}
					if max(now.LastRevision, logged) >= rev {
						return &discarded{reason: fmt.Sprintf("revision %d was taken by a concurrent signature", rev), err: errRevisionTaken}
					}
					return tx.AdvanceTemplateRevision(brand, model, rev)
				},
				extra: map[string]any{"revision": rev, "template": tpl.ProposalID},
				// A signature made and not released still used its
				// revision: none is signed twice.
				discard: func(tx *store.Tx) error {
					err := tx.AdvanceTemplateRevision(brand, model, rev)
					if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
						return nil
					}
					return err
				},
			})
		if errors.Is(err, errRevisionTaken) {
			continue
		}
		return out, err
	}
	return nil, errRevisionTaken
}

// templateRefused audits a signing refused because the template on record
// is not the one officers approved: someone changed the store.
func (a *Appliance) templateRefused(ctx context.Context, client, brand, model string) {
	a.metrics.refusals.WithLabelValues("template-changed").Inc()
	err := a.db.Update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		_, err := tx.Audit("client:"+client, "model.sign", brand+"/"+model, "refused: "+errTemplateChanged.Message, nil)
		return err
	})
	if err != nil {
		a.log.Error("auditing a refused model template", "err", err)
	}
}

// SignSystemUser signs a system-user assertion. Every model it names must
// be in the client's scope and bound to the same system-user key. The
// password is hashed (SHA-512 crypt) and kept nowhere.
func (a *Appliance) SignSystemUser(ctx context.Context, cl *Client, req wire.SystemUserRequest) (asserts.Assertion, error) {
	if len(req.Models) == 0 {
		return nil, badInput("invalid-argument", "models is required: a system-user for every model of the brand is not issued here")
	}
	brand := cl.scope.Brand()
	if err := cl.scope.Check(brand, req.Models, policy.SystemUser); err != nil {
		a.metrics.refusals.WithLabelValues(refusalRule(err)).Inc()
		return nil, err
	}
	now := time.Now().UTC()
	if req.Since.IsZero() {
		req.Since = now
	}
	// The client's limits bound what it may put on devices, whatever
	// models it names: a login of the brand with a validity, credentials
	// and devices the officers allowed.
	if err := a.checkSystemUserLimits(cl, req, now); err != nil {
		return nil, err
	}
	models := make([]any, len(req.Models))
	for i, m := range req.Models {
		models[i] = m
	}
	var k *signingKey
	for _, m := range req.Models {
		km, _, err := a.keyFor(ctx, cl.name, brand, m, policy.SystemUser, map[string]any{"models": models, "brand-id": brand})
		if err != nil {
			return nil, err
		}
		if k != nil && km.rec.Name != k.rec.Name {
			return nil, badInput("mixed-keys", "the models are bound to different system-user keys: ask for one assertion per key")
		}
		k = km
	}
	signed, err := k.signer.SystemUser(assertion.SystemUser{BrandID: brand, Email: req.Email, Username: req.Username, Name: req.Name,
		Models: req.Models, Serials: req.Serials, Password: req.Password, SSHKeys: req.SSHKeys, Since: req.Since, Until: req.Until})
	req.Password = ""
	a.signatureMade(ctx, policy.SystemUser, k.rec.KeyID, err)
	if err != nil {
		return nil, signingError(err, "invalid-argument")
	}
	return a.record(ctx, cl.name, policy.SystemUser, k, store.LogEntry{Brand: brand, Model: joinModels(req.Models)}, signed)
}

// SignPreseed signs a preseed assertion for one model of the client's
// brand.
func (a *Appliance) SignPreseed(ctx context.Context, cl *Client, req wire.PreseedRequest) (asserts.Assertion, error) {
	brand := cl.scope.Brand()
	if err := cl.scope.Check(brand, []string{req.Model}, policy.Preseed); err != nil {
		a.metrics.refusals.WithLabelValues(refusalRule(err)).Inc()
		return nil, err
	}
	if err := a.checkPreseedLimits(cl, req.Model); err != nil {
		return nil, err
	}
	k, _, err := a.keyFor(ctx, cl.name, brand, req.Model, policy.Preseed, map[string]any{"model": req.Model, "brand-id": brand})
	if err != nil {
		return nil, err
	}
	in := assertion.Preseed{BrandID: brand, Model: req.Model, SystemLabel: req.SystemLabel, Series: req.Series,
		ArtifactSHA3384: req.ArtifactSHA3384, Timestamp: time.Now()}
	for _, sn := range req.Snaps {
		in.Snaps = append(in.Snaps, assertion.PreseedSnap{Name: sn.Name, ID: sn.ID, Revision: sn.Revision})
	}
	signed, err := k.signer.Preseed(in)
	a.signatureMade(ctx, policy.Preseed, k.rec.KeyID, err)
	if err != nil {
		return nil, signingError(err, "invalid-argument")
	}
	return a.record(ctx, cl.name, policy.Preseed, k, store.LogEntry{Brand: brand, Model: req.Model}, signed)
}

// signingError answers a failed signing: input the assertion package
// refused is the caller's error (400 with code); a token or self-check
// failure is the appliance's, mapped like any other error.
func signingError(err error, code string) error {
	if errors.Is(err, assertion.ErrInvalidHeaders) {
		return badInput(code, err.Error())
	}
	return err
}

// record logs a signature durably and returns it for the answer. The
// record does not depend on the client staying: a signature the token made
// is logged and audited even if the client has gone away meanwhile (as
// serials are), so the signing log and the audit chain account for every
// signature the token made.
func (a *Appliance) record(ctx context.Context, client string, t policy.AssertionType, k *signingKey, e store.LogEntry, signed assertion.Signed) (asserts.Assertion, error) {
	return a.recordWith(ctx, client, t, k, e, signed, recordHooks{})
}

// recordHooks add to record's transactions what a signing path needs:
// check runs first in the recording transaction (a *discarded from it
// refuses the signature), extra goes into the audit event, and discard
// runs in the transaction that audits a discarded signature.
type recordHooks struct {
	check   func(tx *store.Tx) error
	extra   map[string]any
	discard func(tx *store.Tx) error
}

// recordWith is record with hooks.
func (a *Appliance) recordWith(ctx context.Context, client string, t policy.AssertionType, k *signingKey, e store.LogEntry, signed assertion.Signed, h recordHooks) (asserts.Assertion, error) {
	ctx = context.WithoutCancel(ctx)
	err := a.db.Update(ctx, func(tx *store.Tx) error {
		if h.check != nil {
			if err := h.check(tx); err != nil {
				return err
			}
		}
		return a.logAndAudit(tx, client, t, k, e, signed.Bytes, h.extra)
	})
	var d *discarded
	if errors.As(err, &d) {
		// The refusal is itself recorded, with what was signed, in a
		// transaction of its own (the first one was rolled back whole).
		outcome := failureOutcome(d)
		aerr := a.db.Update(ctx, func(tx *store.Tx) error {
			if h.discard != nil {
				if err := h.discard(tx); err != nil {
					return err
				}
			}
			_, err := tx.Audit("client:"+client, string(t)+".sign", e.Brand+"/"+e.Model, outcome,
				map[string]any{"key_id": k.rec.KeyID, "digest": digest(signed.Bytes)})
			return err
		})
		if aerr != nil {
			a.log.Error("auditing a discarded signature", "type", string(t), "err", aerr)
		}
	}
	if err != nil {
		return nil, err
	}
	return signed.Assertion, nil
}

// LogQuery selects rows of the signing log.
type LogQuery = store.LogFilter

// SigningLog reads the signing log for officers, oldest first. What they
// read holds for good (see store.DB.ViewDurable).
func (a *Appliance) SigningLog(ctx context.Context, q LogQuery) ([]wire.LogEntry, error) {
	var rows []store.LogEntry
	if err := a.db.ViewDurable(ctx, func(tx *store.Tx) error {
		var err error
		rows, err = tx.SigningLog(q)
		return err
	}); err != nil {
		return nil, err
	}
	out := make([]wire.LogEntry, len(rows))
	for i, e := range rows {
		out[i] = wire.LogEntry(e)
	}
	return out, nil
}
