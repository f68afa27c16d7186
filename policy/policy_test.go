package policy

import (
	"errors"
	"strings"
	"testing"
)

func mustScope(t *testing.T, specs ...RoleSpec) *KeyScope {
	t.Helper()
	s, err := NewKeyScope(specs)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNewKeyScopeRefuses(t *testing.T) {
	long := strings.Repeat("a", MaxPatternLen+1)
	many := make([]RoleSpec, MaxEntries+1)
	for i := range many {
		many[i] = RoleSpec{Type: Serial, Models: []string{string(rune('a' + i))}}
	}
	for name, specs := range map[string][]RoleSpec{
		"empty":          nil,
		"unknown type":   {{Type: "snap-declaration"}},
		"bad regex":      {{Type: Serial, Models: []string{"("}}},
		"injection":      {{Type: Serial, Models: []string{"foo)|(.*"}}},
		"empty pattern":  {{Type: Serial, Models: []string{""}}},
		"long pattern":   {{Type: Serial, Models: []string{long}}},
		"duplicate":      {{Type: Serial, Models: []string{"a", "b"}}, {Type: Serial, Models: []string{"b", "a"}}},
		"too many roles": many,
	} {
		if _, err := NewKeyScope(specs); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestCheck(t *testing.T) {
	s := mustScope(t,
		RoleSpec{Type: Serial, Models: []string{"foo-.*", "bar"}},
		RoleSpec{Type: SystemUser, Models: []string{"foo-.*"}},
		RoleSpec{Type: Preseed},
	)
	for _, tc := range []struct {
		t       AssertionType
		headers map[string]any
		rule    string // "" = allowed
	}{
		{Serial, map[string]any{"model": "foo-1"}, ""},
		{Serial, map[string]any{"model": "bar"}, ""},
		{Serial, map[string]any{"model": "xfoo-1"}, "key-model"}, // anchored at the start
		{Serial, map[string]any{"model": "barx"}, "key-model"},   // and at the end
		{Serial, map[string]any{"model": "foobar"}, "key-model"},
		{Serial, map[string]any{"model": "FOO-1"}, "key-model"},
		{Serial, map[string]any{}, "key-model"},
		{Serial, map[string]any{"model": 7}, "key-model"},
		{Model, map[string]any{"model": "foo-1"}, "key-type"},
		{SystemUser, map[string]any{"models": []any{"foo-1", "foo-2"}}, ""},
		{SystemUser, map[string]any{"models": []any{"foo-1", "bar"}}, "key-model"},
		{SystemUser, map[string]any{"models": []any{}}, "key-model"}, // stricter than snapd
		{SystemUser, map[string]any{}, "key-model"},
		{Preseed, map[string]any{"model": "anything"}, ""},
	} {
		err := s.Check(tc.t, tc.headers)
		var r *Refusal
		switch {
		case tc.rule == "" && err != nil:
			t.Errorf("%s %v refused: %v", tc.t, tc.headers, err)
		case tc.rule != "" && (!errors.As(err, &r) || r.Rule != tc.rule || !errors.Is(err, ErrRefused)):
			t.Errorf("%s %v: %v, want rule %s", tc.t, tc.headers, err, tc.rule)
		}
	}
	err := s.Check(Model, map[string]any{"model": "foo-1"})
	if !strings.Contains(err.Error(), "may sign serial, system-user, preseed, not model") {
		t.Errorf("message: %v", err)
	}
}

func TestCheckStoreConstraints(t *testing.T) {
	s := mustScope(t, RoleSpec{Type: Serial, Models: []string{"foo-.*", "bar"}}, RoleSpec{Type: Model})
	ok := []any{
		nil,
		s.Constraints(),
		[]any{map[string]any{"headers": map[string]any{"type": "serial", "model": "bar"}}},
		[]any{map[string]any{"headers": map[string]any{"type": "serial", "model": []any{"foo-.*"}, "serial": "x.*"}}},
		[]any{map[string]any{"headers": map[string]any{"type": "model", "model": "anything"}}},
		[]any{map[string]any{"headers": map[string]any{"type": "model"}}},
	}
	for i, c := range ok {
		if err := s.CheckStoreConstraints(c); err != nil {
			t.Errorf("ok %d: %v", i, err)
		}
	}
	wide := []any{
		[]any{map[string]any{"headers": map[string]any{"type": "preseed"}}},
		[]any{map[string]any{"headers": map[string]any{"type": "serial"}}},
		[]any{map[string]any{"headers": map[string]any{"type": "serial", "model": "foo-.*|baz"}}},
		[]any{map[string]any{"headers": map[string]any{"type": "serial", "model": []any{"foo-.*", "baz"}}}},
		[]any{},
		"garbage",
	}
	for i, c := range wide {
		if err := s.CheckStoreConstraints(c); !errors.Is(err, ErrInvalid) {
			t.Errorf("wide %d accepted: %v", i, err)
		}
	}
}

func TestClientScope(t *testing.T) {
	c, err := NewClientScope("brand-a", []string{"m1", "m2"}, []string{"serial", "system-user"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		brand  string
		models []string
		t      AssertionType
		rule   string
	}{
		{"brand-a", []string{"m1"}, Serial, ""},
		{"brand-a", []string{"m1", "m2"}, SystemUser, ""},
		{"brand-b", []string{"m1"}, Serial, "client-brand"},
		{"brand-a", []string{"m3"}, Serial, "client-model"},
		{"brand-a", []string{"m1", "m3"}, SystemUser, "client-model"},
		{"brand-a", nil, Serial, "client-model"},
		{"brand-a", []string{"m1"}, Model, "client-type"},
	} {
		err := c.Check(tc.brand, tc.models, tc.t)
		var r *Refusal
		if tc.rule == "" && err != nil || tc.rule != "" && (!errors.As(err, &r) || r.Rule != tc.rule) {
			t.Errorf("%+v: %v", tc, err)
		}
	}
	for name, args := range map[string][3]any{
		"bad brand": {"B!", []string{"m"}, []string{"serial"}},
		"no models": {"brand-a", []string{}, []string{"serial"}},
		"bad model": {"brand-a", []string{"-m"}, []string{"serial"}},
		"no types":  {"brand-a", []string{"m"}, []string{}},
		"bad type":  {"brand-a", []string{"m"}, []string{"account-key"}},
	} {
		if _, err := NewClientScope(args[0].(string), args[1].([]string), args[2].([]string)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzKeyScope(f *testing.F) {
	for _, s := range []string{"foo-.*", "a|b", "foo)|(.*", "(?i)x", "[a-z]+", ")(", "^x$"} {
		f.Add(s, "foo-1")
	}
	f.Fuzz(func(t *testing.T, pattern, model string) {
		s, err := NewKeyScope([]RoleSpec{{Type: Serial, Models: []string{pattern}}})
		if err != nil {
			return
		}
		got := s.Check(Serial, map[string]any{"model": model}) == nil
		want := mustMatchAnchored(pattern, model)
		if got != want {
			t.Fatalf("pattern %q model %q: scope says %v, anchored regex says %v", pattern, model, got, want)
		}
	})
}
