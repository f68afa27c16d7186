package policy

import (
	"regexp"
	"testing"
)

// fullMatch reports whether pattern matches all of s without building
// "^(" + pattern + ")$": the leftmost-longest match starting at 0 spans s
// exactly when some match of pattern is all of s. It is the oracle that
// would catch a pattern escaping its anchors, which a comparison with
// the concatenated regexp could not.
func fullMatch(pattern, s string) bool {
	rx := regexp.MustCompile(pattern)
	rx.Longest()
	loc := rx.FindStringIndex(s)
	return loc != nil && loc[0] == 0 && loc[1] == len(s)
}

// FuzzKeyScope builds scopes from arbitrary patterns. The constructor must
// not panic; an accepted pattern must compile on its own and anchored, and
// the scope must accept a model exactly when the anchored pattern (either
// oracle) matches it, for serial's string header, system-user's list
// header and two patterns in one role, and exactly when snapd's precheck
// does for the account-key carrying Constraints(). Specs and Constraints
// must come back through NewKeyScope and CheckStoreConstraints.
func FuzzKeyScope(f *testing.F) {
	// Seeds beyond testdata/fuzz/FuzzKeyScope: the shapes that broke or
	// could break anchoring.
	for _, seed := range [][3]string{
		{"foo-.*", "", "foo-1"},
		{"foo|bar", "", "foobar"},
		{"foo)|(.*", "", "anything"},
		{`\Qfoo`, "", "foo"},
		{`\Qfoo.1\E`, "x", "foo.1"},
		{"(?i)x", "y", "X"},
		{"$MISSING", "", ""},
		{"a$", "^b", "b"},
		{"(a|ab)(c|bcd)", "", "abcd"},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	k := snapd(f)
	f.Fuzz(func(t *testing.T, p1, p2, model string) {
		patterns := []string{p1}
		if p2 != "" {
			patterns = append(patterns, p2)
		}
		s, err := NewKeyScope([]RoleSpec{{Type: Serial, Models: patterns}, {Type: SystemUser, Models: patterns}})
		if err != nil {
			return
		}
		want := false
		for _, p := range patterns {
			if _, err := regexp.Compile(p); err != nil {
				t.Fatalf("accepted %q, which does not compile alone: %v", p, err)
			}
			anchored := regexp.MustCompile("^(" + p + ")$").MatchString(model)
			if full := fullMatch(p, model); full != anchored {
				t.Fatalf("pattern %q model %q: anchored regexp %v, full match %v", p, model, anchored, full)
			}
			want = want || anchored
		}
		if got := s.Check(Serial, map[string]any{"model": model}) == nil; got != want {
			t.Fatalf("patterns %q model %q: Check %v, anchored regexps %v", patterns, model, got, want)
		}
		if got := s.Check(SystemUser, map[string]any{"models": []any{model}}) == nil; got != want {
			t.Fatalf("patterns %q models [%q]: Check %v, anchored regexps %v", patterns, model, got, want)
		}
		ak, err := k.assembledAccountKey(s.Constraints())
		if err != nil {
			t.Fatalf("snapd refuses the constraints of accepted patterns %q: %v", patterns, err)
		}
		for _, typ := range []AssertionType{Serial, SystemUser, Model} {
			for _, h := range headerShapes(typ, model) {
				if ours, theirs := s.snapdAccepts(typ, h), snapdAccepts(t, ak, typ, h); ours != theirs {
					t.Fatalf("patterns %q, %s %q: our matcher %v, snapd %v", patterns, typ, h, ours, theirs)
				}
			}
		}
		back, err := NewKeyScope(s.Specs())
		if err != nil {
			t.Fatalf("Specs() %v not accepted back: %v", s.Specs(), err)
		}
		if err := back.CheckStoreConstraints(s.Constraints()); err != nil {
			t.Fatalf("own constraints refused: %v", err)
		}
	})
}
