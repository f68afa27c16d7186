package policy

import (
	"errors"
	"fmt"
	"slices"
)

// AssertionType is an assertion type a key or a client may be scoped to.
type AssertionType string

// The assertion types keyrack signs for brands. Other types (account-key,
// snap-declaration, ...) are never signed by a brand's device keys here, so
// they cannot be named in a scope at all.
const (
	Serial     AssertionType = "serial"
	Model      AssertionType = "model"
	SystemUser AssertionType = "system-user"
	Preseed    AssertionType = "preseed"
)

// Types lists the assertion types a scope may name, in a stable order.
var Types = []AssertionType{Serial, Model, SystemUser, Preseed}

// ParseType returns the AssertionType named s (exactly, case included, as
// snapd's "type" header is compared).
func ParseType(s string) (AssertionType, error) {
	t := AssertionType(s)
	if t.known() {
		return t, nil
	}
	return "", fmt.Errorf("%w: unknown assertion type %q (known: %s)", ErrInvalid, s, typeList(Types))
}

func (t AssertionType) known() bool { return slices.Contains(Types, t) }

// ModelHeader returns the header through which assertions of type t name
// their model(s): serial, model and preseed carry one name in "model";
// system-user carries a list in "models". Role model patterns constrain
// that header, both here and in the account-key constraints.
func (t AssertionType) ModelHeader() string {
	if t == SystemUser {
		return "models"
	}
	return "model"
}

var (
	// ErrInvalid marks a role, client scope or name that cannot be
	// accepted.
	ErrInvalid = errors.New("invalid scope")
	// ErrRefused marks a request a scope does not allow; the error is a
	// *Refusal.
	ErrRefused = errors.New("refused by policy")
	// ErrStoreConstraints marks Brand Store constraints that are not
	// provably within a key's roles.
	ErrStoreConstraints = errors.New("store constraints not within the key's roles")
)

// Rules a Refusal can name. They form a closed set so that they can be
// used as metric labels.
const (
	RuleKeyType     = "key-type"
	RuleKeyModel    = "key-model"
	RuleClientBrand = "client-brand"
	RuleClientModel = "client-model"
	RuleClientType  = "client-type"
)

// Refusal says which rule refused a request and why.
type Refusal struct {
	Rule    string // one of the Rule* constants
	Message string // for the client or officer: what was asked and what the scope allows
}

func (r *Refusal) Error() string { return r.Rule + ": " + r.Message }

// Unwrap lets callers test errors.Is(err, ErrRefused) without caring which
// rule refused.
func (r *Refusal) Unwrap() error { return ErrRefused }

func refuse(rule, format string, args ...any) *Refusal {
	return &Refusal{Rule: rule, Message: fmt.Sprintf(format, args...)}
}

func typeList(ts []AssertionType) string {
	var out string
	for i, t := range ts {
		if i > 0 {
			out += ", "
		}
		out += string(t)
	}
	return out
}
