package appliance

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
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

// SignModel signs a model assertion for the client's brand with the key
// bound to the model's "model" role.
func (a *Appliance) SignModel(ctx context.Context, cl *Client, req wire.ModelSignRequest) (asserts.Assertion, error) {
	model, _ := req.Headers["model"].(string)
	if model == "" {
		return nil, badInput("invalid-headers", "headers.model is required")
	}
	brand := cl.scope.Brand()
	if err := cl.scope.Check(brand, []string{model}, policy.Model); err != nil {
		a.metrics.refusals.WithLabelValues(refusalRule(err)).Inc()
		return nil, err
	}
	k, _, err := a.keyFor(ctx, brand, model, policy.Model, map[string]any{"model": model, "brand-id": brand})
	if err != nil {
		return nil, err
	}
	signed, err := k.signer.Model(brand, req.Headers, []byte(req.Body))
	a.signatureMade(ctx, policy.Model, k.rec.KeyID, err)
	if err != nil {
		return nil, signingError(err, "invalid-headers")
	}
	return a.record(ctx, cl.name, policy.Model, k, store.LogEntry{Brand: brand, Model: model}, signed)
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
		km, _, err := a.keyFor(ctx, brand, m, policy.SystemUser, map[string]any{"models": models, "brand-id": brand})
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
	k, _, err := a.keyFor(ctx, brand, req.Model, policy.Preseed, map[string]any{"model": req.Model, "brand-id": brand})
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
	ctx = context.WithoutCancel(ctx)
	err := a.db.Update(ctx, func(tx *store.Tx) error {
		return a.logAndAudit(tx, client, t, k, e, signed.Bytes, nil)
	})
	var d *discarded
	if errors.As(err, &d) {
		// The refusal is itself recorded, with what was signed, in a
		// transaction of its own (the first one was rolled back whole).
		outcome := failureOutcome(d)
		aerr := a.db.Update(ctx, func(tx *store.Tx) error {
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
