package policy

import (
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snapcore/snapd/asserts"
)

// snapdKit holds one RSA-4096 key (what snap create-key makes) in a snapd
// assertion database, so tests can have snapd itself sign and decode the
// assertions they compare against. The key is generated once per test
// binary: generating it takes seconds.
type snapdKit struct {
	db    *asserts.Database
	keyID string
	body  []byte // the key in account-key body encoding
}

var (
	kitOnce sync.Once
	kit     *snapdKit
	kitErr  error
)

const testBrand = "brand-a"

func snapd(tb testing.TB) *snapdKit {
	tb.Helper()
	kitOnce.Do(func() { kit, kitErr = newSnapdKit() })
	if kitErr != nil {
		tb.Fatal(kitErr)
	}
	return kit
}

func newSnapdKit() (*snapdKit, error) {
	rk, err := rsa.GenerateKey(rand.Reader, 4096)
	if err != nil {
		return nil, err
	}
	priv := asserts.RSAPrivateKey(rk)
	db, err := asserts.OpenDatabase(&asserts.DatabaseConfig{KeypairManager: asserts.NewMemoryKeypairManager()})
	if err != nil {
		return nil, err
	}
	if err := db.ImportKey(priv); err != nil {
		return nil, err
	}
	body, err := asserts.EncodePublicKey(priv.PublicKey())
	if err != nil {
		return nil, err
	}
	return &snapdKit{db: db, keyID: priv.PublicKey().ID(), body: body}, nil
}

func (k *snapdKit) accountKeyHeaders(constraints []any) map[string]any {
	h := map[string]any{
		"authority-id":        "canonical",
		"account-id":          testBrand,
		"name":                "k",
		"public-key-sha3-384": k.keyID,
		"since":               "2020-01-01T00:00:00Z",
	}
	if constraints != nil {
		h["format"] = "1"
		h["constraints"] = constraints
	}
	return h
}

// accountKey has snapd sign an account-key for the kit's key with the given
// constraints (nil: none), encode it and decode it again, which is how a
// device or the appliance sees the one the Brand Store issues.
func (k *snapdKit) accountKey(tb testing.TB, constraints []any) *asserts.AccountKey {
	tb.Helper()
	a, err := k.db.Sign(asserts.AccountKeyType, k.accountKeyHeaders(constraints), k.body, k.keyID)
	if err != nil {
		tb.Fatalf("signing account-key with constraints %v: %v", constraints, err)
	}
	dec, err := asserts.Decode(asserts.Encode(a))
	if err != nil {
		tb.Fatalf("decoding account-key: %v\n%s", err, asserts.Encode(a))
	}
	return dec.(*asserts.AccountKey)
}

// assembledAccountKey is accountKey without the signature (Assemble does
// not verify one), cheap enough for the fuzz target.
func (k *snapdKit) assembledAccountKey(constraints []any) (*asserts.AccountKey, error) {
	h := k.accountKeyHeaders(constraints)
	h["type"] = "account-key"
	h["body-length"] = strconv.Itoa(len(k.body))
	h["sign-key-sha3-384"] = k.keyID
	a, err := asserts.Assemble(h, k.body, []byte("content"), []byte("signature"))
	if err != nil {
		return nil, err
	}
	return a.(*asserts.AccountKey), nil
}

func snapdAccepts(tb testing.TB, ak *asserts.AccountKey, t AssertionType, headers map[string]any) bool {
	tb.Helper()
	at := asserts.Type(string(t))
	if at == nil {
		tb.Fatalf("snapd does not know type %q", t)
	}
	return ak.ConstraintsPrecheck(at, headers) == nil
}

// differentialScopes covers one and several patterns per role, several
// roles of a type, roles without patterns, every type, alternation,
// flags, classes, repetition, quoting and patterns matching "".
var differentialScopes = [][]RoleSpec{
	{{Type: Serial, Models: []string{"foo-.*"}}},
	{{Type: Serial, Models: []string{"foo-.*", "bar"}}, {Type: Model}},
	{{Type: Serial, Models: []string{"foo|bar"}}, {Type: SystemUser, Models: []string{"foo-[0-9]+"}}},
	{{Type: Preseed, Models: []string{"(?i)pre.*"}}, {Type: Model, Models: []string{"m1", "m2"}}},
	{{Type: SystemUser}},
	{{Type: SystemUser, Models: []string{"foo-.*", "bar"}}, {Type: SystemUser, Models: []string{"m1"}}, {Type: Serial, Models: []string{"m[0-9]"}}},
	{{Type: Serial, Models: []string{`\Qfoo.1\E`}}, {Type: Model, Models: []string{".*"}}},
	{{Type: Serial, Models: []string{"(foo)?"}}, {Type: Preseed, Models: []string{"a-[0-9]{1,3}", "abc-.+"}}},
	{{Type: Serial, Models: []string{"foo-1"}}, {Type: Model, Models: []string{"bar"}}, {Type: SystemUser, Models: []string{"foo-.*"}}, {Type: Preseed, Models: []string{"[a-z]+"}}},
	{{Type: Serial, Models: []string{"foo$"}}, {Type: Model, Models: []string{"^bar"}}, {Type: SystemUser, Models: []string{`foo-\d`, "x"}}},
	// Characters the assertion text format could misread: they must come
	// back from snapd's encoding unchanged.
	{{Type: Serial, Models: []string{"-foo", "a:b", `[a-z]{2}#?`, `"x"`, `'y'`, `\w+-\d`, "foo-.*:"}}, {Type: Model, Models: []string{"bar:"}}},
}

var differentialModels = []string{
	"foo-1", "foo-", "xfoo-1", "foo-1x", "FOO-1", "bar", "barx", "xbar", "foobar", "foo", "m1", "m2", "m12", "M1",
	"pre1", "PRE1", "pre", "", "foo-12", "foo.1", "fooX1", "a-1", "a-1234", "abc-12", "abc-", "x", "foo-1\n", "\nfoo-1", "ü", "foo-9",
}

// headerShapes returns header sets for type t and model name m: the shape
// the type's assertions have, and the others snapd's matcher accepts or
// refuses (lists for single-model types, strings for system-user, nested
// lists, maps).
func headerShapes(t AssertionType, m string) []map[string]any {
	hdr := t.ModelHeader()
	return []map[string]any{
		{hdr: m, "brand-id": testBrand},
		{hdr: []any{m}},
		{hdr: []any{"foo-1", m}},
		{hdr: []any{m, "bar"}},
		{hdr: []any{m, "m2"}},
		{hdr: []any{[]any{m}}},
		{hdr: map[string]any{"model": m}},
	}
}

var fixedShapes = func() []map[string]any {
	var out []map[string]any
	for _, hdr := range []string{"model", "models"} {
		out = append(out,
			map[string]any{},
			map[string]any{hdr: nil},
			map[string]any{hdr: []any{}},
			map[string]any{hdr: []any{[]any{}}},
			map[string]any{hdr: map[string]any{}},
		)
	}
	return out
}()

// TestAgreesWithSnapd registers each scope's Constraints() in an
// account-key signed and decoded by snapd, and compares, for every type and
// header set in the matrix, snapdAccepts (our re-implementation of snapd's
// matcher) and Check with AccountKey.ConstraintsPrecheck. snapdAccepts
// must agree everywhere; Check must agree wherever the model header has the
// shape of a valid assertion and otherwise refuse, and the cases where
// snapd accepts what Check refuses are listed so their number is visible.
func TestAgreesWithSnapd(t *testing.T) {
	k := snapd(t)
	stricter := map[string]int{}
	cases := 0
	for i, specs := range differentialScopes {
		s := mustScope(t, specs...)
		ak := k.accountKey(t, s.Constraints())
		if got := ak.Header("constraints"); !reflect.DeepEqual(got, s.Constraints()) {
			t.Errorf("scope %d: constraints changed through snapd's encoding:\n%#v\n%#v", i, got, s.Constraints())
		}
		for _, typ := range Types {
			var hs []map[string]any
			for _, m := range differentialModels {
				hs = append(hs, headerShapes(typ, m)...)
			}
			hs = append(hs, fixedShapes...)
			for _, h := range hs {
				cases++
				theirs := snapdAccepts(t, ak, typ, h)
				if core := s.snapdAccepts(typ, h); core != theirs {
					t.Errorf("scope %d %v, %s %q: our matcher %v, snapd %v", i, specs, typ, h, core, theirs)
				}
				err := s.Check(typ, h)
				ours := err == nil
				_, anyModel := s.limitedEntries(typ)
				validShape := anyModel || shapeProblem(typ, h[typ.ModelHeader()]) == ""
				switch {
				case validShape && ours != theirs:
					t.Errorf("scope %d %v, %s %q: Check %v (%v), snapd %v", i, specs, typ, h, ours, err, theirs)
				case !validShape && ours:
					t.Errorf("scope %d %v, %s %q: Check accepted a header shape no valid assertion has", i, specs, typ, h)
				case !validShape && theirs:
					stricter[fmt.Sprintf("%s %q", typ, h)]++
				}
			}
		}
	}
	t.Logf("%d scope/type/header cases; Check stricter than snapd's precheck on %d of them (invalid header shapes)", cases, len(stricter))
	// The divergence the package documents: snapd's precheck takes an
	// empty models list for a model-limited system-user role.
	if stricter[fmt.Sprintf("%s %q", SystemUser, map[string]any{"models": []any{}})] == 0 {
		t.Error("expected snapd to accept an empty system-user models list (see TestEmptyModelsOnDevices); has snapd changed?")
	}
	if testing.Verbose() {
		for c := range stricter {
			t.Logf("stricter: %s", c)
		}
	}
}

// TestUnconstrainedAccountKey: without constraints snapd allows every
// signature; Check still applies the roles (what CheckStoreConstraints
// relies on when it accepts absent constraints).
func TestUnconstrainedAccountKey(t *testing.T) {
	k := snapd(t)
	ak := k.accountKey(t, nil)
	if ak.Header("constraints") != nil || ak.Format() != 0 {
		t.Fatalf("unexpected constraints %v, format %d", ak.Header("constraints"), ak.Format())
	}
	s := mustScope(t, RoleSpec{Type: Serial, Models: []string{"foo-.*"}})
	h := map[string]any{"model": "bar"}
	if !snapdAccepts(t, ak, Serial, h) || !snapdAccepts(t, ak, Model, h) {
		t.Error("snapd refused a signature by an unconstrained key")
	}
	if s.Check(Serial, h) == nil || s.Check(Model, h) == nil {
		t.Error("Check accepted what the roles refuse")
	}
	if err := s.CheckStoreConstraints(ak.Header("constraints")); err != nil {
		t.Error(err)
	}
}

// TestStoreConstraintsFromSnapd runs CheckStoreConstraints on account-keys
// as snapd decodes them: our own constraints come back accepted, and for
// each accepted narrower one, snapd indeed accepts nothing Check refuses.
func TestStoreConstraintsFromSnapd(t *testing.T) {
	k := snapd(t)
	s := mustScope(t,
		RoleSpec{Type: Serial, Models: []string{"foo-.*", "bar"}},
		RoleSpec{Type: SystemUser, Models: []string{"foo-.*"}},
		RoleSpec{Type: Model},
	)
	for _, tc := range []struct {
		name string
		c    []any
		ok   bool
	}{
		{"identical", s.Constraints(), true},
		{"subset", []any{storeEntry(map[string]any{"type": "serial", "model": "bar"})}, true},
		{"plain names", []any{storeEntry(map[string]any{"type": "serial", "model": []any{"foo-1", "bar"}}),
			storeEntry(map[string]any{"type": "system-user", "models": "foo-2"})}, true},
		{"narrower by another header", []any{storeEntry(map[string]any{"type": "serial", "model": "foo-.*", "brand-id": testBrand})}, true},
		{"model limited by the store", []any{storeEntry(map[string]any{"type": "model", "model": "foo-.*"})}, true},
		{"extra type", append(s.Constraints(), storeEntry(map[string]any{"type": "preseed"})), false},
		{"different regexp", []any{storeEntry(map[string]any{"type": "serial", "model": "fo.*"})}, false},
		{"extra entry", append(s.Constraints(), storeEntry(map[string]any{"type": "serial", "model": "baz"})), false},
		{"unlimited", []any{storeEntry(map[string]any{"type": "system-user"})}, false},
		{"missing models", []any{storeEntry(map[string]any{"type": "system-user", "models": "$MISSING"})}, false},
	} {
		ak := k.accountKey(t, tc.c)
		err := s.CheckStoreConstraints(ak.Header("constraints"))
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
		if !tc.ok {
			continue
		}
		// Accepted store constraints must not let devices take what the
		// roles refuse: over the matrix, whatever snapd accepts for
		// this account-key, the roles' own constraints accept too.
		own := k.accountKey(t, s.Constraints())
		for _, typ := range Types {
			for _, m := range differentialModels {
				for _, h := range headerShapes(typ, m) {
					if snapdAccepts(t, ak, typ, h) && !snapdAccepts(t, own, typ, h) {
						t.Errorf("%s: store constraints accepted, but snapd takes %s %q under them and not under the roles", tc.name, typ, h)
					}
				}
			}
		}
	}
}

// TestEmptyModelsOnDevices backs the one place Check is stricter than
// snapd's precheck on a header a caller could really pass: snapd signs a
// system-user whose "models" is an empty list, its encoding has no
// "models" at all (valid for every model of the brand), and a device
// checking the signature against a model-limited key refuses it. A
// system-user for a matching model goes through, so the refusal is the
// constraints' doing.
func TestEmptyModelsOnDevices(t *testing.T) {
	k := snapd(t)
	s := mustScope(t, RoleSpec{Type: SystemUser, Models: []string{"foo-.*"}})
	ak := k.accountKey(t, s.Constraints())
	if !snapdAccepts(t, ak, SystemUser, map[string]any{"models": []any{}}) {
		t.Fatal("snapd's precheck refuses an empty models list; the documented divergence is gone")
	}
	when := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		models []any
		device bool // whether a device takes the signature
	}{
		{[]any{}, false},
		{[]any{"foo-1"}, true},
		{[]any{"foo-1", "foo-2"}, true},
		{[]any{"foo-1", "bar"}, false},
	} {
		a, err := k.db.Sign(asserts.SystemUserType, map[string]any{
			"authority-id": testBrand,
			"brand-id":     testBrand,
			"email":        "a@example.com",
			"username":     "alice",
			"models":       tc.models,
			"since":        "2023-01-01T00:00:00Z",
			"until":        "2023-06-01T00:00:00Z",
		}, nil, k.keyID)
		if err != nil {
			t.Fatal(err)
		}
		enc := asserts.Encode(a)
		dec, err := asserts.Decode(enc)
		if err != nil {
			t.Fatal(err)
		}
		if len(tc.models) == 0 && (strings.Contains(string(enc), "\nmodels:") || dec.Header("models") != nil) {
			t.Errorf("snapd kept the empty models list:\n%s", enc)
		}
		err = asserts.CheckSignature(dec, ak, nil, when, when)
		if (err == nil) != tc.device {
			t.Errorf("models %q: device check %v", tc.models, err)
		}
		if err != nil && !strings.Contains(err.Error(), "does not match signing constraints") {
			t.Errorf("models %q: refused for another reason: %v", tc.models, err)
		}
		if ours := s.Check(SystemUser, map[string]any{"models": tc.models}) == nil; ours != tc.device {
			t.Errorf("models %q: Check %v, device %v", tc.models, ours, tc.device)
		}
	}
}

// TestSerialsOnDevices compares Check with the device-side check of real
// serial assertions (snapd signs, encodes, decodes, CheckSignature), for
// every model name a serial can carry.
func TestSerialsOnDevices(t *testing.T) {
	k := snapd(t)
	when := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, specs := range differentialScopes {
		s := mustScope(t, specs...)
		ak := k.accountKey(t, s.Constraints())
		for _, m := range differentialModels {
			if ValidModelName(m) != nil {
				continue
			}
			a, err := k.db.Sign(asserts.SerialType, map[string]any{
				"authority-id":        testBrand,
				"brand-id":            testBrand,
				"model":               m,
				"serial":              "s1",
				"device-key":          string(k.body),
				"device-key-sha3-384": k.keyID,
				"timestamp":           "2023-01-01T00:00:00Z",
			}, nil, k.keyID)
			if err != nil {
				t.Fatalf("signing serial for %q: %v", m, err)
			}
			dec, err := asserts.Decode(asserts.Encode(a))
			if err != nil {
				t.Fatal(err)
			}
			device := asserts.CheckSignature(dec, ak, nil, when, when) == nil
			if ours := s.Check(Serial, dec.Headers()) == nil; ours != device {
				t.Errorf("scope %d %v, serial for %q: Check %v, device %v", i, specs, m, ours, device)
			}
		}
	}
}

// TestNamesAgreeWithSnapd holds ValidBrandID to asserts.IsValidAccountID
// and ValidModelName to the "model" header check snapd applies when
// assembling an assertion.
func TestNamesAgreeWithSnapd(t *testing.T) {
	k := snapd(t)
	names := []string{"", "a", "ab", "a-b", "-ab", "ab-", "a--b", "A", "Ab", "aB", "0", "0a", "a0-9z", "a_b", "a.b", "a/b", "a b", "ü",
		"foo-1\n", strings.Repeat("a", 28), strings.Repeat("a", 29), strings.Repeat("a", 32), strings.Repeat("aB", 16), strings.Repeat("aB", 16) + "c",
		strings.Repeat("a-", 20) + "a", "brand-a", "dev-model", "DEV-MODEL", "Dev-model"}
	for _, n := range names {
		if got, want := ValidBrandID(n) == nil, asserts.IsValidAccountID(n); got != want {
			t.Errorf("ValidBrandID(%q) %v, snapd %v", n, got, want)
		}
		_, err := asserts.Assemble(map[string]any{
			"type":              "device-session-request",
			"brand-id":          testBrand,
			"model":             n,
			"serial":            "s1",
			"nonce":             "n",
			"timestamp":         "2023-01-01T00:00:00Z",
			"sign-key-sha3-384": k.keyID,
		}, nil, []byte("content"), []byte("signature"))
		if got, want := ValidModelName(n) == nil, err == nil; got != want {
			t.Errorf("ValidModelName(%q) %v, snapd %v (%v)", n, got, want, err)
		}
	}
}
