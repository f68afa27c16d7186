package policy

import (
	"errors"
	"strings"
	"testing"
)

func storeEntry(h map[string]any) map[string]any { return map[string]any{"headers": h} }

func TestCheckStoreConstraints(t *testing.T) {
	s := mustScope(t,
		RoleSpec{Type: Serial, Models: []string{"foo-.*", "bar"}},
		RoleSpec{Type: SystemUser, Models: []string{"foo-.*"}},
		RoleSpec{Type: SystemUser, Models: []string{"baz"}},
		RoleSpec{Type: Model},
	)
	accepted := map[string]any{
		"absent":    nil,
		"identical": s.Constraints(),
		"identical, reordered": []any{
			storeEntry(map[string]any{"type": "model"}),
			storeEntry(map[string]any{"type": "system-user", "models": "baz"}),
			storeEntry(map[string]any{"type": "system-user", "models": []any{"foo-.*"}}),
			storeEntry(map[string]any{"type": "serial", "model": []any{"foo-.*", "bar"}}),
		},
		"subset of entries": []any{storeEntry(map[string]any{"type": "serial", "model": []any{"bar", "foo-.*"}})},
		"subset of patterns": []any{
			storeEntry(map[string]any{"type": "serial", "model": "bar"}),
			storeEntry(map[string]any{"type": "serial", "model": []any{"foo-.*"}}),
		},
		"exact model name the role matches": []any{storeEntry(map[string]any{"type": "serial", "model": []any{"foo-1", "bar"}})},
		"extra header narrows":              []any{storeEntry(map[string]any{"type": "serial", "model": "foo-.*", "serial": "X.*"})},
		"any-model role, store limits":      []any{storeEntry(map[string]any{"type": "model", "model": ".*"})},
		"any-model role, store any":         []any{storeEntry(map[string]any{"type": "model"})},
		"any-model role, odd store header":  []any{storeEntry(map[string]any{"type": "model", "model": "$MISSING"})},
		"unknown keys next to headers":      []any{map[string]any{"headers": map[string]any{"type": "model"}, "note": "x"}},
	}
	for name, c := range accepted {
		if err := s.CheckStoreConstraints(c); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	refused := []struct {
		name string
		c    any
		msg  string
	}{
		{"extra type", append(s.Constraints(), storeEntry(map[string]any{"type": "preseed"})),
			`store constraint 5 map["type":"preseed"]: allows "preseed" assertions; the key's roles allow only serial, system-user, model`},
		{"foreign type", []any{storeEntry(map[string]any{"type": "account-key"})}, `allows "account-key" assertions`},
		{"type case", []any{storeEntry(map[string]any{"type": "Model"})}, `allows "Model" assertions`},
		{"any model", []any{storeEntry(map[string]any{"type": "serial"})},
			`store constraint 1 map["type":"serial"]: allows serial for any model; the key's roles allow only serial for models ^(bar)$ | ^(foo-.*)$`},
		{"model header of another type", []any{storeEntry(map[string]any{"type": "system-user", "model": "foo-.*"})}, "allows system-user for any model"},
		{"different regexp", []any{storeEntry(map[string]any{"type": "serial", "model": "foo-.*|baz"})},
			`allows serial for models ["foo-.*|baz"], not within one role of the key (serial for models ^(bar)$ | ^(foo-.*)$)`},
		{"wider regexp", []any{storeEntry(map[string]any{"type": "serial", "model": "foo.*"})}, "not within one role"},
		{"equivalent but different text", []any{storeEntry(map[string]any{"type": "serial", "model": "(foo-.*)"})}, "not within one role"},
		{"extra alternative", []any{storeEntry(map[string]any{"type": "serial", "model": []any{"foo-.*", "baz"}})}, "not within one role"},
		{"plain name the role does not match", []any{storeEntry(map[string]any{"type": "serial", "model": "xfoo-1"})}, "not within one role"},
		{"plain name matching case-folded", []any{storeEntry(map[string]any{"type": "serial", "model": "BAR"})}, "not within one role"},
		{"union of two roles", []any{storeEntry(map[string]any{"type": "system-user", "models": []any{"foo-.*", "baz"}})},
			"not within one role of the key (system-user for models ^(foo-.*)$; or system-user for models ^(baz)$)"},
		{"missing", []any{storeEntry(map[string]any{"type": "system-user", "models": "$MISSING"})}, `"$MISSING" is a snapd reference`},
		{"map constraint", []any{storeEntry(map[string]any{"type": "serial", "model": map[string]any{"x": "y"}})}, "is a map[string]interface {}"},
		{"map alternative", []any{storeEntry(map[string]any{"type": "serial", "model": []any{"bar", map[string]any{"x": "y"}}})}, "has a map[string]interface {} alternative"},
		{"empty alternatives", []any{storeEntry(map[string]any{"type": "serial", "model": []any{}})}, "is an empty list"},
		{"second entry wider", []any{storeEntry(map[string]any{"type": "serial", "model": "bar"}), storeEntry(map[string]any{"type": "serial", "model": "b.*"})},
			"store constraint 2"},
		{"empty list", []any{}, "empty list"},
		{"not a list", "garbage", "must be a list of maps, not string"},
		{"entry not a map", []any{"serial"}, "is a string, not a map"},
		{"no headers", []any{map[string]any{"header": map[string]any{"type": "serial"}}}, `has no "headers" map`},
		{"no type", []any{storeEntry(map[string]any{"model": "bar"})}, `has no "type" string`},
		{"type list", []any{storeEntry(map[string]any{"type": []any{"serial"}})}, `has no "type" string`},
	}
	for _, tc := range refused {
		err := s.CheckStoreConstraints(tc.c)
		if !errors.Is(err, ErrStoreConstraints) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s:\n got %v\nwant ErrStoreConstraints containing %s", tc.name, err, tc.msg)
		}
	}
}

func TestCheckStoreConstraintsLiteralNeedsNoMeta(t *testing.T) {
	// "foo-1" is a plain name; "foo-1." is a regexp whose language (foo-1
	// and one more character) is within foo-.* as well, but proving that
	// is beyond the rule, which refuses it.
	s := mustScope(t, RoleSpec{Type: Serial, Models: []string{"foo-.*"}})
	if err := s.CheckStoreConstraints([]any{storeEntry(map[string]any{"type": "serial", "model": "foo-1"})}); err != nil {
		t.Error(err)
	}
	if err := s.CheckStoreConstraints([]any{storeEntry(map[string]any{"type": "serial", "model": "foo-1."})}); err == nil {
		t.Error("accepted a non-literal regexp that is not one of the role's patterns")
	}
	if err := s.CheckStoreConstraints([]any{storeEntry(map[string]any{"type": "serial", "model": "foo-\xff"})}); err == nil {
		t.Error("accepted invalid UTF-8 as a plain name")
	}
}
