package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Limits on roles. A pattern is compiled once and matched against short
// model names by a linear-time engine (RE2), so bounding the pattern and
// the number of patterns bounds the work of every check; the numbers are
// far above what a brand needs (a handful of model families per type).
const (
	MaxEntries       = 64  // roles per key
	MaxModelPatterns = 32  // model patterns per role
	MaxPatternLen    = 256 // bytes per pattern
)

// RoleSpec is one entry of a key's roles, as officers submit and the key
// record stores them.
type RoleSpec struct {
	Type AssertionType `json:"type"`
	// Models are regular expressions (Go RE2 syntax, as snapd uses) for
	// the type's model header, each anchored as snapd anchors it:
	// ^(pattern)$. A model matches the role if it matches any of them.
	// None means any model of the brand.
	Models []string `json:"models,omitempty"`
}

// entry is a compiled RoleSpec.
type entry struct {
	typ      AssertionType
	patterns []string         // sorted; empty means any model
	rxs      []*regexp.Regexp // rxs[i] is ^(patterns[i])$, compiled exactly as snapd compiles it
}

// KeyScope is a validated, compiled set of roles. The zero value and nil
// allow nothing.
type KeyScope struct {
	entries []entry
}

// NewKeyScope validates and compiles roles.
//
// Besides known types, the limits and compilable patterns, it refuses:
//   - patterns that are not regexps on their own: snapd builds
//     "^(" + pattern + ")$" by string concatenation, so "a)|(.*" would
//     compile there as ^(a)|(.*)$ and match every model;
//   - patterns that stop compiling once anchored (`\Qa` quotes the closing
//     ")$" away), which snapd would refuse when decoding the account-key;
//   - patterns starting with "$": snapd reads such values as references
//     ("$MISSING" means "header absent"), not as regexps;
//   - bytes outside printable ASCII (spaces included): model names never
//     contain them, and in the assertion text a newline turns the value
//     into a multi-line one and a leading or trailing space is invisible
//     to the officers and store staff reading it;
//   - a role that adds nothing because another role of the same type
//     allows all it allows (a repeat, or a model-limited role next to an
//     unlimited one): such roles hide the effective scope from the
//     officers who approve it.
func NewKeyScope(specs []RoleSpec) (*KeyScope, error) {
	if len(specs) == 0 {
		return nil, fmt.Errorf("%w: a key needs at least one role", ErrInvalid)
	}
	if len(specs) > MaxEntries {
		return nil, fmt.Errorf("%w: %d roles, at most %d", ErrInvalid, len(specs), MaxEntries)
	}
	s := &KeyScope{entries: make([]entry, 0, len(specs))}
	for i, sp := range specs {
		if !sp.Type.known() {
			return nil, fmt.Errorf("%w: role %d: unknown assertion type %q (known: %s)", ErrInvalid, i+1, sp.Type, typeList(Types))
		}
		if len(sp.Models) > MaxModelPatterns {
			return nil, fmt.Errorf("%w: role %d (%s) has %d model patterns, at most %d", ErrInvalid, i+1, sp.Type, len(sp.Models), MaxModelPatterns)
		}
		e := entry{typ: sp.Type, patterns: slices.Sorted(slices.Values(sp.Models))}
		for j, p := range e.patterns {
			if j > 0 && p == e.patterns[j-1] {
				return nil, fmt.Errorf("%w: role %d (%s) lists model pattern %q twice", ErrInvalid, i+1, sp.Type, p)
			}
			rx, err := compilePattern(p)
			if err != nil {
				return nil, fmt.Errorf("%w: role %d (%s): model pattern %q %v", ErrInvalid, i+1, sp.Type, p, err)
			}
			e.rxs = append(e.rxs, rx)
		}
		for k := range s.entries {
			o := &s.entries[k]
			if o.typ != e.typ {
				continue
			}
			if e.within(o) {
				return nil, fmt.Errorf("%w: role %d (%s) adds nothing: role %d (%s) already allows all of it",
					ErrInvalid, i+1, e.describe(), k+1, o.describe())
			}
			if o.within(&e) {
				return nil, fmt.Errorf("%w: role %d (%s) adds nothing: role %d (%s) allows all of it",
					ErrInvalid, k+1, o.describe(), i+1, e.describe())
			}
		}
		s.entries = append(s.entries, e)
	}
	return s, nil
}

// compilePattern returns snapd's compilation of a model pattern, or why
// the pattern cannot be a role's.
func compilePattern(p string) (*regexp.Regexp, error) {
	if p == "" || len(p) > MaxPatternLen {
		return nil, fmt.Errorf("must be 1 to %d bytes", MaxPatternLen)
	}
	for i := 0; i < len(p); i++ {
		if p[i] <= ' ' || p[i] > '~' {
			return nil, fmt.Errorf("has byte %#02x at %d: only printable ASCII without spaces", p[i], i)
		}
	}
	if p[0] == '$' {
		return nil, fmt.Errorf("starts with $, which snapd reads as a reference ($MISSING, $SLOT(...)), not a regexp")
	}
	if _, err := regexp.Compile(p); err != nil {
		return nil, fmt.Errorf("is not a regular expression on its own: %v", err)
	}
	rx, err := regexp.Compile("^(" + p + ")$")
	if err != nil {
		return nil, fmt.Errorf("does not compile once anchored as ^(...)$: %v", err)
	}
	return rx, nil
}

// within reports whether everything e allows, o allows too. Both are of
// the same type; a role with no patterns allows any model.
func (e *entry) within(o *entry) bool {
	if len(o.patterns) == 0 {
		return true
	}
	if len(e.patterns) == 0 {
		return false
	}
	for _, p := range e.patterns {
		if _, ok := slices.BinarySearch(o.patterns, p); !ok {
			return false
		}
	}
	return true
}

func (e *entry) describe() string {
	if len(e.patterns) == 0 {
		return fmt.Sprintf("%s for any model", e.typ)
	}
	return fmt.Sprintf("%s for models %s", e.typ, e.anchored())
}

// anchored shows the patterns as snapd applies them, so a refusal makes
// the anchoring visible ("foo-.*" does not match "xfoo-1").
func (e *entry) anchored() string {
	out := make([]string, len(e.patterns))
	for i, p := range e.patterns {
		out[i] = "^(" + p + ")$"
	}
	return strings.Join(out, " | ")
}

// matches is snapd's matching of a constraint value against a header
// value, for the constraints a role can produce: one regexp (a string) or
// a list of alternative regexps (a list of strings). snapd's regexp and
// alternative matchers behave alike on the header shapes assertions have:
//   - a string matches if one of the regexps matches it;
//   - a list matches if every element matches, each on its own (so
//     elements may match different alternatives, nested lists recurse,
//     and an empty list matches);
//   - anything else (absent, a map) does not match.
//
// snapd also formats bool and int64 values as text before matching; decoded
// assertions never hold those (and ConstraintsPrecheck panics copying
// them), so here they do not match.
func (e *entry) matches(v any) bool {
	switch x := v.(type) {
	case string:
		for _, rx := range e.rxs {
			if rx.MatchString(x) {
				return true
			}
		}
		return false
	case []any:
		for _, el := range x {
			if !e.matches(el) {
				return false
			}
		}
		return true
	}
	return false
}

// Specs returns the roles in canonical form (model patterns sorted), for
// storing and showing; NewKeyScope accepts it back unchanged.
func (s *KeyScope) Specs() []RoleSpec {
	out := make([]RoleSpec, len(s.entries))
	for i, e := range s.entries {
		out[i] = RoleSpec{Type: e.typ, Models: slices.Clone(e.patterns)}
	}
	return out
}

// Allows reports whether some role names type t, whatever its models.
func (s *KeyScope) Allows(t AssertionType) bool {
	if s == nil {
		return false
	}
	for _, e := range s.entries {
		if e.typ == t {
			return true
		}
	}
	return false
}

func (s *KeyScope) types() []AssertionType {
	var ts []AssertionType
	for _, e := range s.entries {
		if !slices.Contains(ts, e.typ) {
			ts = append(ts, e.typ)
		}
	}
	return ts
}

// Check decides whether the key may sign an assertion of type t with the
// given headers, represented as snapd represents them (string values,
// []interface{} lists, map[string]interface{} maps). It returns nil or a
// *Refusal with rule key-type or key-model.
//
// It accepts exactly what snapd's AccountKey.ConstraintsPrecheck accepts
// for the account-key carrying s.Constraints(), except that when a role
// limits models, the model header must have the shape the type's
// assertions have, which snapd's matcher does not look at:
//   - serial, model, preseed: "model" must be a string. snapd would also
//     accept a list of matching strings, which no valid assertion of these
//     types has.
//   - system-user: "models" must be a non-empty list of strings. snapd
//     accepts an empty list (every element of it matches), but the
//     assertion encoding drops empty lists, and a system-user without
//     "models" is valid for every model of the brand. Devices check the
//     decoded assertion, where "models" is absent, and refuse it; the
//     appliance refuses it before signing.
//
// A "type" header, if present, must name t: snapd's precheck overwrites it
// with t, but a caller passing headers of another type is confused about
// what it is signing.
func (s *KeyScope) Check(t AssertionType, headers map[string]any) error {
	if s == nil || len(s.entries) == 0 {
		return refuse(RuleKeyType, "the key has no roles: it may sign nothing")
	}
	if ht, ok := headers["type"]; ok && ht != nil {
		if hs, isStr := ht.(string); !isStr || hs != string(t) {
			return refuse(RuleKeyType, "the headers are for a %v assertion, not %s", ht, t)
		}
	}
	if !s.Allows(t) {
		return refuse(RuleKeyType, "the key may sign %s, not %s", typeList(s.types()), t)
	}
	hdr := t.ModelHeader()
	v := headers[hdr]
	limited, anyModel := s.limitedEntries(t)
	if s.snapdAccepts(t, headers) && (anyModel || shapeProblem(t, v) == "") {
		return nil
	}
	if why := shapeProblem(t, v); why != "" {
		return refuse(RuleKeyModel, "%s; the key signs %s", why, describeAll(limited))
	}
	if str, ok := v.(string); ok {
		return refuse(RuleKeyModel, "%s %q is not allowed: the key signs %s", hdr, str, describeAll(limited))
	}
	if len(limited) == 1 {
		for _, el := range v.([]any) {
			if !limited[0].matches(el) {
				return refuse(RuleKeyModel, "%s lists %q, which is not allowed: the key signs %s", hdr, el, describeAll(limited))
			}
		}
	}
	return refuse(RuleKeyModel, "%s %q are not all allowed by one role: the key signs %s (one assertion must fit one role)", hdr, v, describeAll(limited))
}

// snapdAccepts is snapd's decision (AccountKey.ConstraintsPrecheck) for
// the constraints s.Constraints(): some entry of type t matches, an entry
// with no model patterns matching on the type alone. Check adds the shape
// rules to it; the differential tests compare it with snapd on all shapes.
func (s *KeyScope) snapdAccepts(t AssertionType, headers map[string]any) bool {
	for i := range s.entries {
		e := &s.entries[i]
		if e.typ == t && (len(e.rxs) == 0 || e.matches(headers[t.ModelHeader()])) {
			return true
		}
	}
	return false
}

// limitedEntries returns the roles of type t that limit models, and
// whether some role of type t allows any model.
func (s *KeyScope) limitedEntries(t AssertionType) (limited []*entry, anyModel bool) {
	for i := range s.entries {
		e := &s.entries[i]
		if e.typ != t {
			continue
		}
		if len(e.rxs) == 0 {
			anyModel = true
			continue
		}
		limited = append(limited, e)
	}
	return limited, anyModel
}

// shapeProblem says why v cannot be the model header of a valid type t
// assertion, or "" if it can.
func shapeProblem(t AssertionType, v any) string {
	hdr := t.ModelHeader()
	if v == nil {
		if t == SystemUser {
			return fmt.Sprintf("the %s header %q is missing, which would make the system-user valid for every model of the brand", t, hdr)
		}
		return fmt.Sprintf("the %s header %q is missing", t, hdr)
	}
	if t != SystemUser {
		if _, ok := v.(string); !ok {
			return fmt.Sprintf("the %s header %q must be a string, not %T", t, hdr, v)
		}
		return ""
	}
	l, ok := v.([]any)
	if !ok {
		return fmt.Sprintf("the %s header %q must be a list of strings ([]interface{}), not %T", t, hdr, v)
	}
	if len(l) == 0 {
		return fmt.Sprintf("the %s header %q is an empty list, which the assertion encoding drops, leaving a system-user valid for every model of the brand", t, hdr)
	}
	for i, el := range l {
		if _, ok := el.(string); !ok {
			return fmt.Sprintf("element %d of the %s header %q must be a string, not %T", i, t, hdr, el)
		}
	}
	return ""
}

func describeAll(es []*entry) string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.describe()
	}
	return strings.Join(out, "; or ")
}

// Constraints returns the account-key "constraints" header value that
// registers this scope with the Brand Store, as snapd's headers represent
// it: one entry per role, {"headers": {"type": T}} plus, for a role that
// limits models, the type's model header set to the single pattern or to
// the list of alternative patterns. Patterns are given as written, since
// snapd anchors each as ^(pattern)$ itself.
//
// One entry per role, rather than one per pattern, keeps the meaning of a
// role for list headers: a system-user for models [a1, b1] fits the role
// {a.*, b.*} (each element matches an alternative) but neither {a.*} nor
// {b.*} alone.
func (s *KeyScope) Constraints() []any {
	out := make([]any, 0, len(s.entries))
	for _, e := range s.entries {
		h := map[string]any{"type": string(e.typ)}
		switch len(e.patterns) {
		case 0:
		case 1:
			h[e.typ.ModelHeader()] = e.patterns[0]
		default:
			alts := make([]any, len(e.patterns))
			for i, p := range e.patterns {
				alts[i] = p
			}
			h[e.typ.ModelHeader()] = alts
		}
		out = append(out, map[string]any{"headers": h})
	}
	return out
}
