package appliance

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/keyrack/keyrack/appliance/store"
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
func (s *Server) checkModelPayload(tx *store.Tx, p *modelPayload) error {
	if err := policy.ValidBrandID(p.Brand); err != nil {
		return badRequest("invalid-argument", err.Error())
	}
	if err := policy.ValidModelName(p.Model); err != nil {
		return badRequest("invalid-argument", err.Error())
	}
	if len(p.Keys) == 0 {
		return badRequest("invalid-argument", "keys must bind at least one assertion type to a key")
	}
	if p.SerialSource == "" {
		p.SerialSource = "request"
	}
	if p.SerialSource != "request" && p.SerialSource != "assign" {
		return badRequest("invalid-argument", `serial-source must be "request" or "assign"`)
	}
	if len(p.SerialPrefix) > 32 {
		return badRequest("invalid-argument", "serial-prefix is at most 32 characters")
	}
	for t, name := range p.Keys {
		at, err := policy.ParseType(t)
		if err != nil {
			return badRequest("invalid-argument", err.Error())
		}
		k, err := tx.GetKey(name)
		if err != nil {
			return err
		}
		if k.State != store.KeyActive {
			return &APIError{Status: http.StatusConflict, Code: "key-state", Message: fmt.Sprintf("key %q is %s", name, k.State)}
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
			return badRequest("key-roles", fmt.Sprintf("key %q cannot sign %s for model %s: %v", name, at, p.Model, err))
		}
	}
	return nil
}

func (s *Server) proposeModelSet(c echo.Context) error {
	var req modelPayload
	if _, err := decodeJSON(c, &req); err != nil {
		return err
	}
	if req.SerialSource == "" {
		req.SerialSource = "request"
	}
	return s.answer(c, func() (Outcome, error) {
		return s.propose(c.Request().Context(), officerOf(c), KindModelSet,
			fmt.Sprintf("bind model %s/%s to keys %v (serials: %s%s, re-key %v)", req.Brand, req.Model, req.Keys, req.SerialSource,
				map[bool]string{true: " prefix " + req.SerialPrefix, false: ""}[req.SerialPrefix != ""], req.AllowRekey), req)
	})
}

func (s *Server) executeModelSet(tx *store.Tx, p store.Proposal) (string, map[string]any, error) {
	var mp modelPayload
	if err := json.Unmarshal([]byte(p.Payload), &mp); err != nil {
		return "", nil, err
	}
	if err := s.checkModelPayload(tx, &mp); err != nil {
		return "", nil, err
	}
	err := tx.PutModel(store.ModelConfig{Brand: mp.Brand, Model: mp.Model, Keys: mp.Keys, SerialSource: mp.SerialSource,
		SerialPrefix: mp.SerialPrefix, AllowRekey: mp.AllowRekey, ProposalID: p.ID})
	return mp.Brand + "/" + mp.Model, map[string]any{"keys": mp.Keys, "serial-source": mp.SerialSource, "allow-rekey": mp.AllowRekey}, err
}

func (s *Server) listModels(c echo.Context) error {
	var ms []store.ModelConfig
	if err := s.db.View(c.Request().Context(), func(tx *store.Tx) error {
		var err error
		ms, err = tx.ListModels()
		return err
	}); err != nil {
		return err
	}
	type model struct {
		Brand        string            `json:"brand"`
		Model        string            `json:"model"`
		Keys         map[string]string `json:"keys"`
		SerialSource string            `json:"serial-source"`
		SerialPrefix string            `json:"serial-prefix,omitempty"`
		NextSerial   int64             `json:"next-serial,omitempty"`
		AllowRekey   bool              `json:"allow-rekey"`
		UpdatedAt    time.Time         `json:"updated-at"`
	}
	out := make([]model, 0, len(ms))
	for _, m := range ms {
		mm := model{m.Brand, m.Model, m.Keys, m.SerialSource, m.SerialPrefix, 0, m.AllowRekey, m.UpdatedAt}
		if m.SerialSource == "assign" {
			mm.NextSerial = m.NextSerial
		}
		out = append(out, mm)
	}
	return writeJSON(c, http.StatusOK, map[string]any{"models": out})
}
