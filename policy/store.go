package policy

import (
	"fmt"
	"regexp"
	"slices"
	"unicode/utf8"
)

// CheckStoreConstraints refuses the "constraints" of the account-key
// assertion the Brand Store issued for this key (as snapd decodes them:
// []interface{} of maps, or nil when absent) unless every assertion they
// let the key sign is one the local roles allow too.
//
// Absent constraints (nil) are accepted: devices will then take any
// signature of the key, but the appliance still checks the local roles
// before each one, so the key signs nothing more. Constraints narrower than
// the roles are accepted as well; the key then cannot sign all its roles
// allow in a way devices accept, which is the store's choice to make.
//
// Whether one regexp's language contains another's is decidable but not
// something to trust a hand-written check with, so the rule is
// deliberately conservative. Each store entry must be within one local role
// of its type (one role, not a union of roles: for list headers such as
// system-user "models" a union would allow more, see Constraints). A store
// entry is within a role if:
//   - its "type" is exactly the role's type (snapd compiles the type as a
//     regexp too, but refuses values with regexp metacharacters, so equal
//     strings mean equal languages); and
//   - the role allows any model, or the entry constrains the type's model
//     header with a string or a list of strings (alternatives) where each
//     alternative is one of the role's patterns, the same string (snapd
//     anchors both the same way, so the languages are equal), or a plain
//     name without regexp metacharacters that the role matches (^(name)$
//     matches only that name).
//
// Anything else in the model header (a map, nested lists, "$MISSING",
// which matches assertions without the header) is refused. Other headers
// in a store entry are accepted whatever they say: snapd requires every
// header of an entry to match, so each one can only narrow it.
func (s *KeyScope) CheckStoreConstraints(cs any) error {
	if cs == nil {
		return nil
	}
	list, ok := cs.([]any)
	if !ok {
		return fmt.Errorf("%w: constraints must be a list of maps, not %T", ErrStoreConstraints, cs)
	}
	if len(list) == 0 {
		return fmt.Errorf("%w: constraints are an empty list (snapd refuses those)", ErrStoreConstraints)
	}
	for i, item := range list {
		if why := s.storeEntryProblem(item); why != "" {
			return fmt.Errorf("%w: store constraint %d %v: %s", ErrStoreConstraints, i+1, describeStoreEntry(item), why)
		}
	}
	return nil
}

func describeStoreEntry(item any) string {
	if m, ok := item.(map[string]any); ok {
		if h, ok := m["headers"].(map[string]any); ok {
			return fmt.Sprintf("%q", h) // maps print with sorted keys
		}
	}
	return fmt.Sprintf("%q", item)
}

// storeEntryProblem says why one store constraint is not within the
// roles, or returns "".
func (s *KeyScope) storeEntryProblem(item any) string {
	m, ok := item.(map[string]any)
	if !ok {
		return fmt.Sprintf("is a %T, not a map", item)
	}
	h, ok := m["headers"].(map[string]any)
	if !ok {
		return `has no "headers" map`
	}
	ts, ok := h["type"].(string)
	if !ok {
		return `has no "type" string`
	}
	t := AssertionType(ts)
	if !t.known() || !s.Allows(t) {
		return fmt.Sprintf("allows %q assertions; the key's roles allow only %s", ts, typeList(s.types()))
	}
	var limited []*entry
	for i := range s.entries {
		e := &s.entries[i]
		if e.typ != t {
			continue
		}
		if len(e.patterns) == 0 {
			return ""
		}
		limited = append(limited, e)
	}
	hdr := t.ModelHeader()
	c, ok := h[hdr]
	if !ok {
		return fmt.Sprintf("allows %s for any model; the key's roles allow only %s", t, describeAll(limited))
	}
	alts, why := storeAlternatives(c)
	if why != "" {
		return fmt.Sprintf("%q constraint %s", hdr, why)
	}
	for _, e := range limited {
		if e.covers(alts) {
			return ""
		}
	}
	return fmt.Sprintf("allows %s for models %q, not within one role of the key (%s): each alternative must be one of a role's patterns, or a plain model name the role matches",
		t, alts, describeAll(limited))
}

// storeAlternatives returns the regexps of a store model constraint, or
// why it is not one this check can compare.
func storeAlternatives(c any) ([]string, string) {
	var alts []string
	switch x := c.(type) {
	case string:
		alts = []string{x}
	case []any:
		for _, el := range x {
			str, ok := el.(string)
			if !ok {
				return nil, fmt.Sprintf("has a %T alternative; only regexps can be compared", el)
			}
			alts = append(alts, str)
		}
	default:
		return nil, fmt.Sprintf("is a %T; only a regexp or a list of them can be compared", c)
	}
	if len(alts) == 0 {
		return nil, "is an empty list"
	}
	for _, a := range alts {
		if len(a) > 0 && a[0] == '$' {
			return nil, fmt.Sprintf("%q is a snapd reference, not a regexp ($MISSING matches assertions without the header)", a)
		}
	}
	return alts, ""
}

// covers reports whether every alternative is provably within e: one of
// its patterns, or a plain name it matches.
func (e *entry) covers(alts []string) bool {
	for _, a := range alts {
		if _, ok := slices.BinarySearch(e.patterns, a); ok {
			continue
		}
		if utf8.ValidString(a) && regexp.QuoteMeta(a) == a && e.matches(a) {
			continue
		}
		return false
	}
	return true
}
