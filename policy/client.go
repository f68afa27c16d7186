package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Name rules copied from snapd's asserts package (account.go validAccountID,
// model.go validModel and checkModel), so that a scope never names a brand
// or model no assertion can carry. TestNamesAgreeWithSnapd holds them to
// snapd's.
var (
	validAccountID = regexp.MustCompile("^(?:[a-z0-9A-Z]{32}|[-a-z0-9]{2,28})$")
	validModel     = regexp.MustCompile("^[a-zA-Z0-9](?:-?[a-zA-Z0-9])*$")
)

// ValidBrandID checks a brand (account) id as snapd does: 2 to 28
// lowercase letters, digits and dashes, or 32 letters and digits (the
// generated ids).
func ValidBrandID(s string) error {
	if !validAccountID.MatchString(s) {
		return fmt.Errorf("%w: brand id %q is not a valid account id (2 to 28 of a-z, 0-9 and -, or 32 of a-z, A-Z and 0-9)", ErrInvalid, s)
	}
	return nil
}

// ValidModelName checks a model name as snapd's "model" header check
// does: letters and digits, dashes only between them, and (snapd's second
// test) no uppercase letters.
func ValidModelName(s string) error {
	if !validModel.MatchString(s) {
		return fmt.Errorf("%w: model name %q is not valid (a-z and 0-9, single dashes between them)", ErrInvalid, s)
	}
	if strings.ToLower(s) != s {
		return fmt.Errorf("%w: model name %q has uppercase letters, which snapd refuses in the model header", ErrInvalid, s)
	}
	return nil
}

// MaxClientModels bounds a client scope; a factory line serves a few
// models, and the scope is checked on every request.
const MaxClientModels = 1000

// ClientScope is what a factory API client may ask for: assertions of some
// types, for one brand and named models. Models are exact names, not
// patterns: a client is given models, not families, so adding a model to a
// family never silently widens what a factory line may obtain.
type ClientScope struct {
	brand  string
	models []string // sorted, unique
	types  []AssertionType
}

// NewClientScope validates a client scope. Repeated models or types are
// merged: a scope is a set.
func NewClientScope(brand string, models []string, types []string) (*ClientScope, error) {
	if err := ValidBrandID(brand); err != nil {
		return nil, err
	}
	if len(models) == 0 || len(models) > MaxClientModels {
		return nil, fmt.Errorf("%w: a client needs 1 to %d models, not %d", ErrInvalid, MaxClientModels, len(models))
	}
	for _, m := range models {
		if err := ValidModelName(m); err != nil {
			return nil, err
		}
	}
	if len(types) == 0 {
		return nil, fmt.Errorf("%w: a client needs at least one assertion type", ErrInvalid)
	}
	c := &ClientScope{brand: brand, models: slices.Compact(slices.Sorted(slices.Values(models)))}
	for _, t := range types {
		at, err := ParseType(t)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(c.types, at) {
			c.types = append(c.types, at)
		}
	}
	return c, nil
}

// Brand returns the client's brand.
func (c *ClientScope) Brand() string { return c.brand }

// Models returns the client's models, sorted.
func (c *ClientScope) Models() []string { return slices.Clone(c.models) }

// Types returns the client's assertion types.
func (c *ClientScope) Types() []AssertionType { return slices.Clone(c.types) }

// Check decides whether the client may ask for an assertion of type t for
// brand that concerns every one of models (one for serial, model and
// preseed; a system-user lists several). A request naming no model is
// refused: a system-user without models would be valid for every model of
// the brand, including those of other factory lines. The error is nil or a
// *Refusal with rule client-brand, client-type or client-model, checked in
// that order.
func (c *ClientScope) Check(brand string, models []string, t AssertionType) error {
	if c == nil {
		return refuse(RuleClientBrand, "the client has no scope")
	}
	if brand != c.brand {
		return refuse(RuleClientBrand, "the client is scoped to brand %q, not %q", c.brand, brand)
	}
	if !slices.Contains(c.types, t) {
		return refuse(RuleClientType, "the client may ask for %s, not %s", typeList(c.types), t)
	}
	if len(models) == 0 {
		return refuse(RuleClientModel, "the request names no model; the client is scoped to %s", c.modelList())
	}
	for _, m := range models {
		if _, ok := slices.BinarySearch(c.models, m); !ok {
			return refuse(RuleClientModel, "the client is not scoped to model %q (its models: %s)", m, c.modelList())
		}
	}
	return nil
}

// CheckModel is Check for a request that concerns one model.
func (c *ClientScope) CheckModel(brand, model string, t AssertionType) error {
	return c.Check(brand, []string{model}, t)
}

// modelList names the client's models for a refusal, or counts them when
// naming them all would drown the message.
func (c *ClientScope) modelList() string {
	if len(c.models) > 8 {
		return fmt.Sprintf("%d models, %s, ...", len(c.models), strings.Join(c.models[:3], ", "))
	}
	return strings.Join(c.models, ", ")
}
