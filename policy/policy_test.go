package policy

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func mustScope(t testing.TB, specs ...RoleSpec) *KeyScope {
	t.Helper()
	s, err := NewKeyScope(specs)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseType(t *testing.T) {
	for _, s := range []string{"serial", "model", "system-user", "preseed"} {
		if at, err := ParseType(s); err != nil || string(at) != s {
			t.Errorf("ParseType(%q) = %q, %v", s, at, err)
		}
	}
	for _, s := range []string{"", "Serial", "serial ", "account-key", "snap-declaration", "serial|model", "model.*"} {
		_, err := ParseType(s)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "unknown assertion type") ||
			!strings.Contains(err.Error(), "known: serial, model, system-user, preseed") {
			t.Errorf("ParseType(%q): %v", s, err)
		}
	}
	if SystemUser.ModelHeader() != "models" || Serial.ModelHeader() != "model" || Preseed.ModelHeader() != "model" || Model.ModelHeader() != "model" {
		t.Error("model headers")
	}
}

func TestNewKeyScopeRefuses(t *testing.T) {
	many := make([]RoleSpec, MaxEntries+1)
	for i := range many {
		many[i] = RoleSpec{Type: Serial, Models: []string{"m" + strings.Repeat("x", i)}}
	}
	manyPatterns := make([]string, MaxModelPatterns+1)
	for i := range manyPatterns {
		manyPatterns[i] = "m" + strings.Repeat("x", i)
	}
	for _, tc := range []struct {
		name  string
		specs []RoleSpec
		msg   string // part of the error
	}{
		{"nil", nil, "at least one role"},
		{"empty", []RoleSpec{}, "at least one role"},
		{"unknown type", []RoleSpec{{Type: "snap-declaration"}}, `role 1: unknown assertion type "snap-declaration"`},
		{"type regexp", []RoleSpec{{Type: "serial|model"}}, "unknown assertion type"},
		{"type case", []RoleSpec{{Type: "Serial"}}, "unknown assertion type"},
		{"unknown type later", []RoleSpec{{Type: Serial}, {Type: ""}}, `role 2: unknown assertion type ""`},
		{"bad regexp", []RoleSpec{{Type: Serial, Models: []string{"("}}}, "is not a regular expression on its own"},
		{"bad repeat", []RoleSpec{{Type: Serial, Models: []string{"*foo"}}}, "is not a regular expression on its own"},
		{"perl only", []RoleSpec{{Type: Serial, Models: []string{"(?=foo)"}}}, "is not a regular expression on its own"},
		{"backreference", []RoleSpec{{Type: Serial, Models: []string{`(a)\1`}}}, "is not a regular expression on its own"},
		{"escape out of the anchors", []RoleSpec{{Type: Serial, Models: []string{"foo)|(.*"}}}, "is not a regular expression on its own"},
		{"quote swallows the anchors", []RoleSpec{{Type: Serial, Models: []string{`\Qfoo`}}}, "does not compile once anchored"},
		{"snapd reference", []RoleSpec{{Type: SystemUser, Models: []string{"$MISSING"}}}, "starts with $"},
		{"snapd op", []RoleSpec{{Type: Serial, Models: []string{"$SLOT(x)"}}}, "starts with $"},
		{"empty pattern", []RoleSpec{{Type: Serial, Models: []string{""}}}, "must be 1 to 256 bytes"},
		{"long pattern", []RoleSpec{{Type: Serial, Models: []string{strings.Repeat("a", MaxPatternLen+1)}}}, "must be 1 to 256 bytes"},
		{"space", []RoleSpec{{Type: Serial, Models: []string{"foo bar"}}}, "byte 0x20 at 3"},
		{"newline", []RoleSpec{{Type: Serial, Models: []string{"foo\n"}}}, "byte 0x0a at 3"},
		{"non-ascii", []RoleSpec{{Type: Serial, Models: []string{"fü"}}}, "byte 0xc3 at 1"},
		{"too many roles", many, "65 roles, at most 64"},
		{"too many patterns", []RoleSpec{{Type: Serial, Models: manyPatterns}}, "33 model patterns, at most 32"},
		{"repeated pattern", []RoleSpec{{Type: Serial, Models: []string{"a", "b", "a"}}}, `lists model pattern "a" twice`},
		{"repeated role", []RoleSpec{{Type: Serial, Models: []string{"a", "b"}}, {Type: Serial, Models: []string{"b", "a"}}},
			"role 2 (serial for models ^(a)$ | ^(b)$) adds nothing: role 1"},
		{"repeated any-model role", []RoleSpec{{Type: Model}, {Type: Model}}, "role 2 (model for any model) adds nothing"},
		{"limited next to any", []RoleSpec{{Type: Preseed}, {Type: Preseed, Models: []string{"a"}}}, "role 2 (preseed for models ^(a)$) adds nothing: role 1 (preseed for any model)"},
		{"any next to limited", []RoleSpec{{Type: Preseed, Models: []string{"a"}}, {Type: Preseed}}, "role 1 (preseed for models ^(a)$) adds nothing: role 2 (preseed for any model) allows all of it"},
		{"subset role", []RoleSpec{{Type: SystemUser, Models: []string{"a", "b"}}, {Type: SystemUser, Models: []string{"b"}}}, "role 2 (system-user for models ^(b)$) adds nothing"},
	} {
		_, err := NewKeyScope(tc.specs)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: got %v, want an ErrInvalid containing %q", tc.name, err, tc.msg)
		}
	}
}

func TestNewKeyScopeAccepts(t *testing.T) {
	maxed := make([]RoleSpec, MaxEntries)
	for i := range maxed {
		maxed[i] = RoleSpec{Type: Types[i%4], Models: []string{"m" + strings.Repeat("x", i)}}
	}
	patterns := make([]string, MaxModelPatterns)
	for i := range patterns {
		patterns[i] = "m" + strings.Repeat("x", i)
	}
	for name, specs := range map[string][]RoleSpec{
		"max roles":      maxed,
		"max patterns":   {{Type: Serial, Models: patterns}},
		"max length":     {{Type: Serial, Models: []string{strings.Repeat("a", MaxPatternLen)}}},
		"quoted literal": {{Type: Serial, Models: []string{`\Qfoo.1\E`}}},
		"dollar inside":  {{Type: Serial, Models: []string{"foo$"}}},
		"same type, disjoint patterns": {{Type: SystemUser, Models: []string{"a"}}, {Type: SystemUser, Models: []string{"b"}},
			{Type: Serial, Models: []string{"a"}}},
		"all types, any model": {{Type: Serial}, {Type: Model}, {Type: SystemUser}, {Type: Preseed}},
	} {
		if _, err := NewKeyScope(specs); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestSpecsRoundTrip(t *testing.T) {
	s := mustScope(t, RoleSpec{Type: Serial, Models: []string{"b", "a"}}, RoleSpec{Type: Model})
	want := []RoleSpec{{Type: Serial, Models: []string{"a", "b"}}, {Type: Model, Models: []string{}}}
	got := s.Specs()
	if len(got) != 2 || !reflect.DeepEqual(got[0], want[0]) || got[1].Type != Model || len(got[1].Models) != 0 {
		t.Fatalf("Specs() = %#v", got)
	}
	b, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `[{"type":"serial","models":["a","b"]},{"type":"model"}]` {
		t.Errorf("canonical JSON %s", b)
	}
	var back []RoleSpec
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	s2 := mustScope(t, back...)
	if !reflect.DeepEqual(s2.Constraints(), s.Constraints()) {
		t.Errorf("round trip changed the scope: %v vs %v", s2.Constraints(), s.Constraints())
	}
	// Specs must not expose the scope's own slices.
	got[0].Models[0] = "zzz"
	if s.Specs()[0].Models[0] != "a" {
		t.Error("Specs aliases the scope")
	}
}

func TestCheck(t *testing.T) {
	s := mustScope(t,
		RoleSpec{Type: Serial, Models: []string{"foo-.*", "bar"}},
		RoleSpec{Type: Model, Models: []string{"foo|bar"}},
		RoleSpec{Type: SystemUser, Models: []string{"foo-.*"}},
		RoleSpec{Type: SystemUser, Models: []string{"bar"}},
		RoleSpec{Type: Preseed},
	)
	list := func(m ...any) []any { return m }
	for _, tc := range []struct {
		t       AssertionType
		headers map[string]any
		rule    string // "" = allowed
		msg     string // part of the refusal
	}{
		{Serial, map[string]any{"model": "foo-1"}, "", ""},
		{Serial, map[string]any{"model": "foo-"}, "", ""},
		{Serial, map[string]any{"model": "bar", "brand-id": "b", "serial": "x"}, "", ""},
		{Serial, map[string]any{"model": "xfoo-1"}, RuleKeyModel, `model "xfoo-1" is not allowed: the key signs serial for models ^(bar)$ | ^(foo-.*)$`},
		{Serial, map[string]any{"model": "barx"}, RuleKeyModel, `model "barx" is not allowed`},
		{Serial, map[string]any{"model": "xbar"}, RuleKeyModel, `model "xbar" is not allowed`},
		{Serial, map[string]any{"model": "FOO-1"}, RuleKeyModel, `model "FOO-1" is not allowed`},
		{Serial, map[string]any{"model": "foo-1\n"}, RuleKeyModel, "is not allowed"},
		{Serial, map[string]any{"model": ""}, RuleKeyModel, `model "" is not allowed`},
		{Serial, map[string]any{}, RuleKeyModel, `the serial header "model" is missing; the key signs serial for models`},
		{Serial, nil, RuleKeyModel, `the serial header "model" is missing`},
		{Serial, map[string]any{"model": nil}, RuleKeyModel, `is missing`},
		{Serial, map[string]any{"model": list("foo-1")}, RuleKeyModel, `the serial header "model" must be a string, not []interface {}`},
		{Serial, map[string]any{"model": map[string]any{"x": "foo-1"}}, RuleKeyModel, "must be a string, not map"},
		{Serial, map[string]any{"model": 7}, RuleKeyModel, "must be a string, not int"},
		{Serial, map[string]any{"models": list("foo-1")}, RuleKeyModel, `header "model" is missing`},
		// "foo|bar" is anchored as ^(foo|bar)$, not ^foo|bar$.
		{Model, map[string]any{"model": "foo"}, "", ""},
		{Model, map[string]any{"model": "bar"}, "", ""},
		{Model, map[string]any{"model": "foobar"}, RuleKeyModel, `model "foobar" is not allowed: the key signs model for models ^(foo|bar)$`},
		{Model, map[string]any{"model": "foox"}, RuleKeyModel, "is not allowed"},
		{Model, map[string]any{"model": "xbar"}, RuleKeyModel, "is not allowed"},
		{Model, map[string]any{"model": "foo-1", "type": "model"}, RuleKeyModel, "is not allowed"},
		{Model, map[string]any{"model": "foo", "type": "serial"}, RuleKeyType, `the headers are for a serial assertion, not model`},
		{Model, map[string]any{"model": "foo", "type": list("model")}, RuleKeyType, "not model"},
		{SystemUser, map[string]any{"models": list("foo-1", "foo-2")}, "", ""},
		{SystemUser, map[string]any{"models": list("bar")}, "", ""},
		{SystemUser, map[string]any{"models": list("foo-1", "bar")}, RuleKeyModel,
			`models ["foo-1" "bar"] are not all allowed by one role: the key signs system-user for models ^(foo-.*)$; or system-user for models ^(bar)$`},
		{SystemUser, map[string]any{"models": list("foo-1", "baz")}, RuleKeyModel, "are not all allowed by one role"},
		{SystemUser, map[string]any{"models": list()}, RuleKeyModel, `the system-user header "models" is an empty list, which the assertion encoding drops`},
		{SystemUser, map[string]any{}, RuleKeyModel, `the system-user header "models" is missing, which would make the system-user valid for every model`},
		{SystemUser, map[string]any{"models": "foo-1"}, RuleKeyModel, "must be a list of strings ([]interface{}), not string"},
		{SystemUser, map[string]any{"models": []string{"foo-1"}}, RuleKeyModel, "must be a list of strings ([]interface{}), not []string"},
		{SystemUser, map[string]any{"models": list(list("foo-1"))}, RuleKeyModel, "element 0 of the system-user header \"models\" must be a string, not []interface {}"},
		{SystemUser, map[string]any{"models": list("foo-1", 3)}, RuleKeyModel, "element 1"},
		{Preseed, map[string]any{"model": "anything"}, "", ""},
		{Preseed, map[string]any{}, "", ""}, // any model: the type alone matches, as in snapd
	} {
		err := s.Check(tc.t, tc.headers)
		var r *Refusal
		switch {
		case tc.rule == "":
			if err != nil {
				t.Errorf("%s %v refused: %v", tc.t, tc.headers, err)
			}
		case !errors.As(err, &r) || r.Rule != tc.rule || !errors.Is(err, ErrRefused) || !strings.Contains(r.Message, tc.msg):
			t.Errorf("%s %v:\n got %v\nwant rule %s, message containing %s", tc.t, tc.headers, err, tc.rule, tc.msg)
		case err.Error() != r.Rule+": "+r.Message:
			t.Errorf("Error() = %q", err.Error())
		}
	}

	one := mustScope(t, RoleSpec{Type: SystemUser, Models: []string{"foo-.*"}})
	err := one.Check(SystemUser, map[string]any{"models": list("foo-1", "bar", "baz")})
	if err == nil || !strings.Contains(err.Error(), `key-model: models lists "bar", which is not allowed: the key signs system-user for models ^(foo-.*)$`) {
		t.Errorf("single role list refusal: %v", err)
	}
	err = s.Check(Model, nil)
	if err == nil || !strings.Contains(err.Error(), "key-model") {
		t.Errorf("nil headers: %v", err)
	}
	serialOnly := mustScope(t, RoleSpec{Type: Serial}, RoleSpec{Type: Preseed, Models: []string{"a"}})
	err = serialOnly.Check(Model, map[string]any{"model": "a"})
	if err == nil || err.Error() != "key-type: the key may sign serial, preseed, not model" {
		t.Errorf("type refusal: %v", err)
	}
	for _, empty := range []*KeyScope{nil, {}} {
		err := empty.Check(Serial, map[string]any{"model": "a"})
		var r *Refusal
		if !errors.As(err, &r) || r.Rule != RuleKeyType {
			t.Errorf("empty scope: %v", err)
		}
		if empty.Allows(Serial) {
			t.Error("empty scope allows serial")
		}
	}
}

func TestCheckCaseInsensitivePattern(t *testing.T) {
	// Flags work inside the anchoring group, as in snapd.
	s := mustScope(t, RoleSpec{Type: Serial, Models: []string{"(?i)foo-[a-z]+"}})
	for model, ok := range map[string]bool{"foo-a": true, "FOO-A": true, "xfoo-a": false, "foo-a1": false} {
		if got := s.Check(Serial, map[string]any{"model": model}) == nil; got != ok {
			t.Errorf("%q: %v", model, got)
		}
	}
}

func TestConstraints(t *testing.T) {
	s := mustScope(t,
		RoleSpec{Type: Serial, Models: []string{"foo-.*", "bar"}},
		RoleSpec{Type: SystemUser, Models: []string{"foo-.*"}},
		RoleSpec{Type: Preseed},
	)
	want := []any{
		map[string]any{"headers": map[string]any{"type": "serial", "model": []any{"bar", "foo-.*"}}},
		map[string]any{"headers": map[string]any{"type": "system-user", "models": "foo-.*"}},
		map[string]any{"headers": map[string]any{"type": "preseed"}},
	}
	if got := s.Constraints(); !reflect.DeepEqual(got, want) {
		t.Errorf("Constraints() = %#v\nwant %#v", got, want)
	}
}

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		s     string
		brand bool
		model bool
	}{
		{"brand-a", true, true},
		{"ab", true, true},
		{"a", false, true},
		{"-ab", true, false}, // account ids may start with a dash; model names may not
		{"ab-", true, false},
		{"a--b", true, false},
		{"a-b-c", true, true},
		{strings.Repeat("a", 28), true, true},
		{strings.Repeat("a", 29), false, true},
		{strings.Repeat("aB1", 10) + "cD", true, false}, // 32 mixed-case: a generated account id; uppercase model names are refused
		{strings.Repeat("a", 31) + "B", true, false},
		{strings.Repeat("a", 33), false, true},
		{"Model", false, false},
		{"", false, false},
		{"a_b", false, false},
		{"a.b", false, false},
		{"a b", false, false},
		{"ü", false, false},
		{"0", false, true},
	} {
		if err := ValidBrandID(tc.s); (err == nil) != tc.brand || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("ValidBrandID(%q) = %v", tc.s, err)
		}
		if err := ValidModelName(tc.s); (err == nil) != tc.model || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("ValidModelName(%q) = %v", tc.s, err)
		}
	}
	if err := ValidModelName("Model"); err == nil || !strings.Contains(err.Error(), "uppercase") {
		t.Errorf("uppercase message: %v", err)
	}
}

func TestClientScope(t *testing.T) {
	c, err := NewClientScope("brand-a", []string{"m2", "m1", "m1"}, []string{"serial", "system-user", "serial"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Brand() != "brand-a" || !reflect.DeepEqual(c.Models(), []string{"m1", "m2"}) || !reflect.DeepEqual(c.Types(), []AssertionType{Serial, SystemUser}) {
		t.Errorf("scope %q %v %v", c.Brand(), c.Models(), c.Types())
	}
	for _, tc := range []struct {
		brand  string
		models []string
		t      AssertionType
		rule   string
		msg    string
	}{
		{"brand-a", []string{"m1"}, Serial, "", ""},
		{"brand-a", []string{"m1", "m2"}, SystemUser, "", ""},
		{"brand-b", []string{"m1"}, Serial, RuleClientBrand, `the client is scoped to brand "brand-a", not "brand-b"`},
		{"Brand-a", []string{"m1"}, Serial, RuleClientBrand, "not"},
		{"", []string{"m1"}, Serial, RuleClientBrand, "not"},
		{"brand-a", []string{"m3"}, Serial, RuleClientModel, `the client is not scoped to model "m3" (its models: m1, m2)`},
		{"brand-a", []string{"M1"}, Serial, RuleClientModel, `model "M1"`},
		{"brand-a", []string{"m1", "m3"}, SystemUser, RuleClientModel, `model "m3"`},
		{"brand-a", nil, SystemUser, RuleClientModel, "the request names no model"},
		{"brand-a", []string{}, Serial, RuleClientModel, "the request names no model"},
		{"brand-a", []string{"m1"}, Model, RuleClientType, "the client may ask for serial, system-user, not model"},
		{"brand-b", []string{"m3"}, Model, RuleClientBrand, "brand"}, // brand first
		{"brand-a", []string{"m3"}, Model, RuleClientType, "model"},  // then type
	} {
		err := c.Check(tc.brand, tc.models, tc.t)
		var r *Refusal
		if tc.rule == "" {
			if err != nil {
				t.Errorf("%+v: %v", tc, err)
			}
			continue
		}
		if !errors.As(err, &r) || r.Rule != tc.rule || !errors.Is(err, ErrRefused) || !strings.Contains(r.Message, tc.msg) {
			t.Errorf("%+v: %v", tc, err)
		}
	}
	if err := c.CheckModel("brand-a", "m2", Serial); err != nil {
		t.Error(err)
	}
	if err := c.CheckModel("brand-a", "m3", Serial); err == nil {
		t.Error("CheckModel accepted m3")
	}
	var nilScope *ClientScope
	if err := nilScope.Check("brand-a", []string{"m1"}, Serial); !errors.Is(err, ErrRefused) {
		t.Errorf("nil scope: %v", err)
	}

	tooMany := make([]string, MaxClientModels+1)
	for i := range tooMany {
		tooMany[i] = "m" + strings.Repeat("1", i%50) + string(rune('a'+i%26))
	}
	for name, args := range map[string]struct {
		brand  string
		models []string
		types  []string
		msg    string
	}{
		"bad brand":   {"B!", []string{"m"}, []string{"serial"}, "brand id"},
		"empty brand": {"", []string{"m"}, []string{"serial"}, "brand id"},
		"no models":   {"brand-a", []string{}, []string{"serial"}, "1 to 1000 models, not 0"},
		"many models": {"brand-a", tooMany, []string{"serial"}, "1 to 1000 models, not 1001"},
		"bad model":   {"brand-a", []string{"-m"}, []string{"serial"}, `model name "-m"`},
		"upper model": {"brand-a", []string{"M"}, []string{"serial"}, "uppercase"},
		"regex model": {"brand-a", []string{"m.*"}, []string{"serial"}, `model name "m.*"`},
		"no types":    {"brand-a", []string{"m"}, []string{}, "at least one assertion type"},
		"bad type":    {"brand-a", []string{"m"}, []string{"account-key"}, `unknown assertion type "account-key"`},
	} {
		if _, err := NewClientScope(args.brand, args.models, args.types); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), args.msg) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestClientScopeLongModelList(t *testing.T) {
	models := make([]string, 20)
	for i := range models {
		models[i] = "m" + string(rune('a'+i))
	}
	c, err := NewClientScope("brand-a", models, []string{"serial"})
	if err != nil {
		t.Fatal(err)
	}
	err = c.CheckModel("brand-a", "zz", Serial)
	if err == nil || !strings.Contains(err.Error(), "(its models: 20 models, ma, mb, mc, ...)") {
		t.Errorf("long list: %v", err)
	}
}
