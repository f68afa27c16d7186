package policy

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// AssertionType is an assertion type a key may be scoped to.
type AssertionType string

const (
	Serial     AssertionType = "serial"
	Model      AssertionType = "model"
	SystemUser AssertionType = "system-user"
	Preseed    AssertionType = "preseed"
)

// Types lists the assertion types keyrack signs for devices.
var Types = []AssertionType{Serial, Model, SystemUser, Preseed}

// ErrInvalid marks a role or client scope that cannot be accepted.
var ErrInvalid = errors.New("invalid scope")

// ParseType returns the AssertionType named s.
func ParseType(s string) (AssertionType, error) {
	t := AssertionType(s)
	if slices.Contains(Types, t) {
		return t, nil
	}
	return "", fmt.Errorf("%w: unknown assertion type %q (known: serial, model, system-user, preseed)", ErrInvalid, s)
}

// modelHeader is the header that carries the model name(s) per type:
// serial, model and preseed name one model; system-user lists models.
func modelHeader(t AssertionType) string {
	if t == SystemUser {
		return "models"
	}
	return "model"
}

// Limits that keep role regexes cheap to compile and match (RE2 is linear
// in the input, so bounding the pattern bounds the work).
const (
	MaxEntries       = 16
	MaxModelPatterns = 32
	MaxPatternLen    = 256
)

// RoleSpec is one entry of a key's roles as officers submit them.
type RoleSpec struct {
	Type AssertionType `json:"type"`
	// Models are model-name regexes, anchored as snapd anchors them
	// (^(...)$). None means any model of the brand.
	Models []string `json:"models,omitempty"`
}

type entry struct {
	spec RoleSpec
	rx   *regexp.Regexp // nil: any model
}

// KeyScope is a validated, compiled set of roles.
type KeyScope struct {
	entries []entry
}

// NewKeyScope validates and compiles roles.
func NewKeyScope(specs []RoleSpec) (*KeyScope, error) {
	if len(specs) == 0 {
		return nil, fmt.Errorf("%w: a key needs at least one role", ErrInvalid)
	}
	if len(specs) > MaxEntries {
		return nil, fmt.Errorf("%w: %d roles, at most %d", ErrInvalid, len(specs), MaxEntries)
	}
	s := &KeyScope{}
	seen := map[string]bool{}
	for i, sp := range specs {
		if _, err := ParseType(string(sp.Type)); err != nil {
			return nil, fmt.Errorf("role %d: %w", i+1, err)
		}
		if len(sp.Models) > MaxModelPatterns {
			return nil, fmt.Errorf("%w: role %d (%s) has %d model patterns, at most %d", ErrInvalid, i+1, sp.Type, len(sp.Models), MaxModelPatterns)
		}
		models := slices.Clone(sp.Models)
		sort.Strings(models)
		models = slices.Compact(models)
		var alts []string
		for _, m := range models {
			if m == "" || len(m) > MaxPatternLen {
				return nil, fmt.Errorf("%w: role %d (%s): model pattern must be 1 to %d bytes", ErrInvalid, i+1, sp.Type, MaxPatternLen)
			}
			// A pattern must be a regex on its own: snapd wraps it as
			// ^(p)$, and "foo)|(.*" would turn that into ^(foo)|(.*)$,
			// which matches any model.
			if _, err := regexp.Compile(m); err != nil {
				return nil, fmt.Errorf("%w: role %d (%s): model pattern %q: %v", ErrInvalid, i+1, sp.Type, m, err)
			}
			alts = append(alts, "(?:"+m+")")
		}
		key := string(sp.Type) + "\x00" + strings.Join(models, "\x00")
		if seen[key] {
			return nil, fmt.Errorf("%w: role %d repeats %s with the same models", ErrInvalid, i+1, sp.Type)
		}
		seen[key] = true
		e := entry{spec: RoleSpec{Type: sp.Type, Models: models}}
		if len(alts) > 0 {
			// Each pattern anchored on its own, exactly as snapd anchors
			// every alternative of a constraint.
			e.rx = regexp.MustCompile("^(?:" + strings.Join(anchorEach(models), "|") + ")$")
		}
		s.entries = append(s.entries, e)
	}
	return s, nil
}

func anchorEach(models []string) []string {
	out := make([]string, len(models))
	for i, m := range models {
		out[i] = "(?:^(?:" + m + ")$)"
	}
	return out
}

// Specs returns the roles in canonical form (model patterns sorted,
// duplicates removed), for storing and showing.
func (s *KeyScope) Specs() []RoleSpec {
	out := make([]RoleSpec, len(s.entries))
	for i, e := range s.entries {
		out[i] = RoleSpec{Type: e.spec.Type, Models: slices.Clone(e.spec.Models)}
	}
	return out
}

// Allows reports whether some role names type t (whatever its models).
func (s *KeyScope) Allows(t AssertionType) bool {
	for _, e := range s.entries {
		if e.spec.Type == t {
			return true
		}
	}
	return false
}

// ErrRefused marks a request that a scope does not allow.
var ErrRefused = errors.New("refused by policy")

// Refusal says which rule refused a request and why. Rule is one of a
// closed set (key-type, key-model, client-brand, client-model, client-type),
// fit for a metric label.
type Refusal struct {
	Rule    string
	Message string
}

func (r *Refusal) Error() string { return r.Rule + ": " + r.Message }
func (r *Refusal) Unwrap() error { return ErrRefused }

// Check decides whether the key may sign an assertion of type t with
// headers (as snapd represents them: strings, []interface{} lists, maps).
//
// It agrees with snapd's constraint matching, and is stricter in two
// places: a system-user assertion whose "models" list is empty matches a
// model-scoped role in snapd (every element of an empty list matches) yet
// would be valid for every model of the brand, so Check refuses it; and
// NewKeyScope refuses patterns that are not regexes on their own.
func (s *KeyScope) Check(t AssertionType, headers map[string]any) error {
	if !s.Allows(t) {
		return &Refusal{Rule: "key-type", Message: fmt.Sprintf("the key may sign %s, not %s", s.typeList(), t)}
	}
	hdr := modelHeader(t)
	v := headers[hdr]
	for _, e := range s.entries {
		if e.spec.Type != t {
			continue
		}
		if e.rx == nil || modelsMatch(e.rx, v) {
			return nil
		}
	}
	return &Refusal{Rule: "key-model", Message: fmt.Sprintf("%s %s does not match the key's model patterns for %s (%s)",
		hdr, describe(v), t, strings.Join(s.patterns(t), ", "))}
}

func modelsMatch(rx *regexp.Regexp, v any) bool {
	switch x := v.(type) {
	case string:
		return rx.MatchString(x)
	case []any:
		if len(x) == 0 {
			return false
		}
		for _, el := range x {
			s, ok := el.(string)
			if !ok || !rx.MatchString(s) {
				return false
			}
		}
		return true
	case []string:
		if len(x) == 0 {
			return false
		}
		for _, s := range x {
			if !rx.MatchString(s) {
				return false
			}
		}
		return true
	}
	return false
}

func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "(missing)"
	case string:
		return fmt.Sprintf("%q", x)
	}
	return fmt.Sprintf("%v", v)
}

func (s *KeyScope) typeList() string {
	var ts []string
	for _, e := range s.entries {
		if !slices.Contains(ts, string(e.spec.Type)) {
			ts = append(ts, string(e.spec.Type))
		}
	}
	return strings.Join(ts, ", ")
}

func (s *KeyScope) patterns(t AssertionType) []string {
	var out []string
	for _, e := range s.entries {
		if e.spec.Type == t {
			out = append(out, e.spec.Models...)
		}
	}
	return out
}

// Constraints returns the account-key "constraints" header value that
// registers this scope with the Brand Store: one entry per role, the type
// literal and the model patterns as one regex or a list of alternatives.
func (s *KeyScope) Constraints() []any {
	out := make([]any, 0, len(s.entries))
	for _, e := range s.entries {
		h := map[string]any{"type": string(e.spec.Type)}
		switch len(e.spec.Models) {
		case 0:
		case 1:
			h[modelHeader(e.spec.Type)] = e.spec.Models[0]
		default:
			alts := make([]any, len(e.spec.Models))
			for i, m := range e.spec.Models {
				alts[i] = m
			}
			h[modelHeader(e.spec.Type)] = alts
		}
		out = append(out, map[string]any{"headers": h})
	}
	return out
}

// CheckStoreConstraints refuses the constraints of an account-key
// assertion (as decoded by snapd: []interface{} of maps) when they would
// let the key sign more than its local roles allow. Absent constraints
// (nil) are accepted: the local roles still bind every signature.
//
// Deciding whether one regex language contains another is not practical,
// so the rule is conservative: every store entry must name a type the key
// has a role for and, where that role limits models, limit the model
// header to a subset of the role's exact pattern strings. Extra headers in
// a store entry only narrow it, so they are accepted.
func (s *KeyScope) CheckStoreConstraints(cs any) error {
	if cs == nil {
		return nil
	}
	list, ok := cs.([]any)
	if !ok || len(list) == 0 {
		return fmt.Errorf("%w: constraints must be a non-empty list", ErrInvalid)
	}
	for i, item := range list {
		m, ok := item.(map[string]any)
		if !ok {
			return fmt.Errorf("%w: constraint %d is not a map", ErrInvalid, i+1)
		}
		h, ok := m["headers"].(map[string]any)
		if !ok {
			return fmt.Errorf("%w: constraint %d has no headers map", ErrInvalid, i+1)
		}
		ts, _ := h["type"].(string)
		t := AssertionType(ts)
		if !s.Allows(t) {
			return fmt.Errorf("%w: store constraint %d allows %q, which the key's roles (%s) do not", ErrInvalid, i+1, ts, s.typeList())
		}
		if !s.storeEntryWithin(t, h[modelHeader(t)]) {
			return fmt.Errorf("%w: store constraint %d (%s) allows models %s, wider than the key's patterns (%s)",
				ErrInvalid, i+1, t, describe(h[modelHeader(t)]), strings.Join(s.patterns(t), ", "))
		}
	}
	return nil
}

// storeEntryWithin reports whether a store model constraint v for type t is
// within one local role of that type.
func (s *KeyScope) storeEntryWithin(t AssertionType, v any) bool {
	var store []string
	switch x := v.(type) {
	case nil:
	case string:
		store = []string{x}
	case []any:
		for _, el := range x {
			str, ok := el.(string)
			if !ok {
				return false
			}
			store = append(store, str)
		}
	default:
		return false
	}
	for _, e := range s.entries {
		if e.spec.Type != t {
			continue
		}
		if e.rx == nil {
			return true // the role allows any model: anything is within
		}
		if len(store) == 0 {
			continue // store allows any model, the role does not
		}
		within := true
		for _, p := range store {
			if !slices.Contains(e.spec.Models, p) {
				within = false
				break
			}
		}
		if within {
			return true
		}
	}
	return false
}
