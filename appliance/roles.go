package appliance

import (
	"bytes"
	"encoding/json"

	"github.com/keyrack/keyrack/policy"
)

// roles is a key's validated role scope with its canonical JSON, which is
// what the key record stores (fixed at creation, never updated).
type roles struct {
	scope     *policy.KeyScope
	canonical string
}

func parseRoles(raw json.RawMessage) (roles, error) {
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return roles{}, badInput("invalid-roles", "roles are required: a list of {\"type\": ..., \"models\": [regex, ...]}")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var specs []policy.RoleSpec
	if err := dec.Decode(&specs); err != nil {
		return roles{}, badInput("invalid-roles", "roles: "+err.Error())
	}
	scope, err := policy.NewKeyScope(specs)
	if err != nil {
		return roles{}, badInput("invalid-roles", err.Error())
	}
	canon, err := json.Marshal(scope.Specs())
	if err != nil {
		return roles{}, err
	}
	return roles{scope: scope, canonical: string(canon)}, nil
}
