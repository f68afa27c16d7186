package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Name rules, as snapd's asserts package defines them.
var (
	validBrandID   = regexp.MustCompile("^(?:[a-z0-9A-Z]{32}|[-a-z0-9]{2,28})$")
	validModelName = regexp.MustCompile("^[a-zA-Z0-9](?:-?[a-zA-Z0-9])*$")
)

// ValidBrandID checks an account id as snapd does.
func ValidBrandID(s string) error {
	if !validBrandID.MatchString(s) {
		return fmt.Errorf("%w: brand id %q is not a valid account id", ErrInvalid, s)
	}
	return nil
}

// ValidModelName checks a model name as snapd does.
func ValidModelName(s string) error {
	if !validModelName.MatchString(s) {
		return fmt.Errorf("%w: model name %q is not valid (letters, digits and single dashes)", ErrInvalid, s)
	}
	return nil
}

// ClientScope is what a factory API client may ask for: one brand, named
// models (exact names, not patterns: a client is given models, not
// families), and assertion types.
type ClientScope struct {
	brand  string
	models []string
	types  []AssertionType
}

// NewClientScope validates a client scope.
func NewClientScope(brand string, models []string, types []string) (*ClientScope, error) {
	if err := ValidBrandID(brand); err != nil {
		return nil, err
	}
	if len(models) == 0 || len(models) > 1000 {
		return nil, fmt.Errorf("%w: a client needs 1 to 1000 models", ErrInvalid)
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

// Check decides whether the client may ask for an assertion of type t for
// brand and every one of models.
func (c *ClientScope) Check(brand string, models []string, t AssertionType) error {
	if brand != c.brand {
		return &Refusal{Rule: "client-brand", Message: fmt.Sprintf("the client is scoped to brand %q, not %q", c.brand, brand)}
	}
	if !slices.Contains(c.types, t) {
		return &Refusal{Rule: "client-type", Message: fmt.Sprintf("the client may ask for %s, not %s", typeNames(c.types), t)}
	}
	if len(models) == 0 {
		return &Refusal{Rule: "client-model", Message: "the request names no model"}
	}
	for _, m := range models {
		if _, ok := slices.BinarySearch(c.models, m); !ok {
			return &Refusal{Rule: "client-model", Message: fmt.Sprintf("the client is not scoped to model %q", m)}
		}
	}
	return nil
}

func typeNames(ts []AssertionType) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = string(t)
	}
	return strings.Join(s, ", ")
}
