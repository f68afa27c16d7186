package policy

import (
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/snapcore/snapd/asserts"
)

func mustMatchAnchored(pattern, s string) bool {
	return regexp.MustCompile("^(" + pattern + ")$").MatchString(s)
}

var (
	pubOnce sync.Once
	pubKey  asserts.PublicKey
)

// accountKeyWith assembles (without a real signature: only its constraint
// matching is used) a format-1 account-key carrying constraints.
func accountKeyWith(t *testing.T, constraints []any) *asserts.AccountKey {
	t.Helper()
	pubOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		pubKey = asserts.RSAPublicKey(&k.PublicKey)
	})
	body, err := asserts.EncodePublicKey(pubKey)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "type: account-key\nformat: 1\nauthority-id: canonical\naccount-id: brand-a\nname: k\n")
	fmt.Fprintf(&b, "public-key-sha3-384: %s\nsince: 2020-01-01T00:00:00Z\n", pubKey.ID())
	b.WriteString("constraints:\n")
	for _, c := range constraints {
		h := c.(map[string]any)["headers"].(map[string]any)
		b.WriteString("  -\n    headers:\n")
		keys := make([]string, 0, len(h))
		for k := range h {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			switch v := h[k].(type) {
			case string:
				fmt.Fprintf(&b, "      %s: %s\n", k, v)
			case []any:
				fmt.Fprintf(&b, "      %s:\n", k)
				for _, el := range v {
					fmt.Fprintf(&b, "        - %s\n", el)
				}
			}
		}
	}
	fmt.Fprintf(&b, "body-length: %d\nsign-key-sha3-384: %s", len(body), pubKey.ID())
	text := b.String() + "\n\n" + string(body) + "\n\nAcLBUgQAAQoABgUCWk"
	a, err := asserts.Decode([]byte(text))
	if err != nil {
		t.Fatalf("decoding account-key: %v\n%s", err, text)
	}
	return a.(*asserts.AccountKey)
}

// TestAgreesWithSnapd compares Check with snapd's own constraint matching
// for the constraints we publish, over a matrix of types and headers.
func TestAgreesWithSnapd(t *testing.T) {
	scopes := [][]RoleSpec{
		{{Type: Serial, Models: []string{"foo-.*"}}},
		{{Type: Serial, Models: []string{"foo-.*", "bar"}}, {Type: Model}},
		{{Type: Serial, Models: []string{"foo|bar"}}, {Type: SystemUser, Models: []string{"foo-[0-9]+"}}},
		{{Type: Preseed, Models: []string{"(?i)pre.*"}}, {Type: Model, Models: []string{"m1", "m2"}}},
		{{Type: SystemUser}},
	}
	models := []string{"foo-1", "foo-", "xfoo-1", "foo-1x", "FOO-1", "bar", "barx", "foobar", "foo", "m1", "m2", "m12", "pre1", "PRE1", "", "foo-12"}
	for i, specs := range scopes {
		s := mustScope(t, specs...)
		ak := accountKeyWith(t, s.Constraints())
		for _, typ := range Types {
			at := asserts.Type(string(typ))
			var cases []map[string]any
			for _, m := range models {
				if typ == SystemUser {
					cases = append(cases,
						map[string]any{"models": []any{m}},
						map[string]any{"models": []any{"foo-1", m}})
				} else {
					cases = append(cases, map[string]any{"model": m})
				}
			}
			cases = append(cases, map[string]any{})
			for _, h := range cases {
				ours := s.Check(typ, h) == nil
				theirs := ak.ConstraintsPrecheck(at, h) == nil
				if ours != theirs {
					t.Errorf("scope %d %v, %s %v: keyrack %v, snapd %v", i, specs, typ, h, ours, theirs)
				}
			}
		}
		// The one deliberate difference: an empty models list.
		if s.Allows(SystemUser) && len(s.patterns(SystemUser)) > 0 {
			h := map[string]any{"models": []any{}}
			if s.Check(SystemUser, h) == nil {
				t.Errorf("scope %d: empty models list accepted", i)
			}
		}
	}
}
