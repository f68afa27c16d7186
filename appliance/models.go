package appliance

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
	"github.com/keyrack/keyrack/policy"
)

// KindModelSet binds a model to its signing keys; it is a ceremony because
// it decides which key signs for which devices.
const KindModelSet = "model.set"

type modelPayload struct {
	Brand        string            `json:"brand"`
	Model        string            `json:"model"`
	Keys         map[string]string `json:"keys"`          // assertion type -> key name
	SerialSource string            `json:"serial-source"` // request (default) | assign
	SerialPrefix string            `json:"serial-prefix,omitempty"`
	AllowRekey   bool              `json:"allow-rekey,omitempty"`
}

// checkModelPayload validates a model binding against the keys' roles: a
// key may be bound to a type for a model only if its roles allow it.
func (a *Appliance) checkModelPayload(tx *store.Tx, p *modelPayload) error {
	if err := policy.ValidBrandID(p.Brand); err != nil {
		return badInput("invalid-argument", err.Error())
	}
	if err := policy.ValidModelName(p.Model); err != nil {
		return badInput("invalid-argument", err.Error())
	}
	if len(p.Keys) == 0 {
		return badInput("invalid-argument", "keys must bind at least one assertion type to a key")
	}
	if p.SerialSource == "" {
		p.SerialSource = "request"
	}
	if p.SerialSource != "request" && p.SerialSource != "assign" {
		return badInput("invalid-argument", `serial-source must be "request" or "assign"`)
	}
	if len(p.SerialPrefix) > 32 {
		return badInput("invalid-argument", "serial-prefix is at most 32 characters")
	}
	// Assigned serials are the prefix and a number: the prefix must start
	// them the way a serial may start.
	if p.SerialPrefix != "" && !serialPattern.MatchString(p.SerialPrefix) {
		return badInput("invalid-argument", "serial-prefix: letters, digits and . _ : -, starting with a letter or a digit")
	}
	for t, name := range p.Keys {
		at, err := policy.ParseType(t)
		if err != nil {
			return badInput("invalid-argument", err.Error())
		}
		k, err := tx.GetKey(name)
		if err != nil {
			return err
		}
		if k.State != store.KeyActive {
			return &Error{Kind: Conflict, Code: "key-state", Message: fmt.Sprintf("key %q is %s", name, k.State)}
		}
		r, err := parseRoles(json.RawMessage(k.Roles))
		if err != nil {
			return err
		}
		h := map[string]any{"model": p.Model}
		if at == policy.SystemUser {
			h = map[string]any{"models": []any{p.Model}}
		}
		if err := r.scope.Check(at, h); err != nil {
			return badInput("key-roles", fmt.Sprintf("key %q cannot sign %s for model %s: %v", name, at, p.Model, err))
		}
	}
	return nil
}

// ProposeModelSet proposes binding a model to its signing keys.
func (a *Appliance) ProposeModelSet(ctx context.Context, officer string, req wire.ModelBinding) (out Outcome, err error) {
	defer a.auditRefusal(ctx, officer, "proposal.create", KindModelSet, &err)
	if req.SerialSource == "" {
		req.SerialSource = "request"
	}
	return a.propose(ctx, officer, KindModelSet,
		fmt.Sprintf("bind model %s/%s to keys %v (serials: %s%s, re-key %v)", req.Brand, req.Model, req.Keys, req.SerialSource,
			map[bool]string{true: " prefix " + req.SerialPrefix, false: ""}[req.SerialPrefix != ""], req.AllowRekey), modelPayload(req))
}

func (a *Appliance) executeModelSet(tx *store.Tx, p store.Proposal) (string, map[string]any, error) {
	var mp modelPayload
	if err := json.Unmarshal([]byte(p.Payload), &mp); err != nil {
		return "", nil, err
	}
	if err := a.checkModelPayload(tx, &mp); err != nil {
		return "", nil, err
	}
	err := tx.PutModel(store.ModelConfig{Brand: mp.Brand, Model: mp.Model, Keys: mp.Keys, SerialSource: mp.SerialSource,
		SerialPrefix: mp.SerialPrefix, AllowRekey: mp.AllowRekey, ProposalID: p.ID})
	return mp.Brand + "/" + mp.Model, map[string]any{"keys": mp.Keys, "serial-source": mp.SerialSource, "allow-rekey": mp.AllowRekey}, err
}

// ListModels lists the models set up on the appliance.
func (a *Appliance) ListModels(ctx context.Context) ([]wire.Model, error) {
	var ms []store.ModelConfig
	if err := a.db.View(ctx, func(tx *store.Tx) error {
		var err error
		ms, err = tx.ListModels()
		return err
	}); err != nil {
		return nil, err
	}
	out := make([]wire.Model, 0, len(ms))
	for _, m := range ms {
		mm := wire.Model{Brand: m.Brand, Model: m.Model, Keys: m.Keys, SerialSource: m.SerialSource, SerialPrefix: m.SerialPrefix,
			AllowRekey: m.AllowRekey, UpdatedAt: m.UpdatedAt}
		if m.SerialSource == "assign" {
			mm.NextSerial = m.NextSerial
		}
		out = append(out, mm)
	}
	return out, nil
}
