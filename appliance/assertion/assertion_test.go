package assertion_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance/assertion"
	"github.com/keyrack/keyrack/hsm"
	"github.com/keyrack/keyrack/softhsm"
)

// Fixtures: a SoftHSM token holding the brand key, a test root, and a
// device key. RSA-4096 keys are slow to make, so they are made once.
var (
	mod       *hsm.Module
	tokenKey  *hsm.Key        // the brand key, inside the token
	rootPriv  *rsa.PrivateKey // test root (trusted)
	otherPriv *rsa.PrivateKey // an in-memory RSA-4096 brand key
	devPriv   *rsa.PrivateKey // a device key
)

const (
	rootID  = "testroot"
	brandID = "brand-x"
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var cleanup func()
	var err error
	if _, mod, cleanup, err = softhsm.OpenTemp("assertion-test", nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cleanup()
	type res struct {
		k   *rsa.PrivateKey
		err error
	}
	gen := func(bits int) chan res {
		c := make(chan res, 1)
		go func() { k, err := rsa.GenerateKey(rand.Reader, bits); c <- res{k, err} }()
		return c
	}
	rc, oc, dc := gen(4096), gen(4096), gen(2048)
	if tokenKey, err = mod.GenerateRSA(context.Background(), hsm.KeySpec{Label: "brand", Bits: 4096}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, p := range []struct {
		c   chan res
		dst **rsa.PrivateKey
	}{{rc, &rootPriv}, {oc, &otherPriv}, {dc, &devPriv}} {
		r := <-p.c
		if r.err != nil {
			fmt.Fprintln(os.Stderr, r.err)
			return 1
		}
		*p.dst = r.k
	}
	return m.Run()
}

// rootSigningDB signs root-authored assertions (account, account-key).
func rootSigningDB(t testing.TB) (*asserts.Database, asserts.PrivateKey) {
	t.Helper()
	rk := asserts.RSAPrivateKey(rootPriv)
	kpm := asserts.NewMemoryKeypairManager()
	db, err := asserts.OpenDatabase(&asserts.DatabaseConfig{Backstore: asserts.NewMemoryBackstore(), KeypairManager: kpm})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.ImportKey(rk); err != nil {
		t.Fatal(err)
	}
	return db, rk
}

func signByRoot(t testing.TB, typ *asserts.AssertionType, headers map[string]any, body []byte) asserts.Assertion {
	t.Helper()
	db, rk := rootSigningDB(t)
	a, err := db.Sign(typ, headers, body, rk.PublicKey().ID())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

var since = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

func accountKey(t testing.TB, accountID string, pub asserts.PublicKey, constraints []any) asserts.Assertion {
	t.Helper()
	body, err := asserts.EncodePublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	h := map[string]any{
		"authority-id":        rootID,
		"account-id":          accountID,
		"name":                "default",
		"public-key-sha3-384": pub.ID(),
		"since":               since.Format(time.RFC3339),
	}
	if constraints != nil {
		h["format"] = "1"
		h["constraints"] = constraints
	}
	return signByRoot(t, asserts.AccountKeyType, h, body)
}

func account(t testing.TB, id string) asserts.Assertion {
	return signByRoot(t, asserts.AccountType, map[string]any{
		"authority-id": rootID,
		"account-id":   id,
		"display-name": id,
		"validation":   "verified",
		"timestamp":    since.Format(time.RFC3339),
	}, nil)
}

// checkingDB trusts only the test root and holds the brand account and the
// brand's account-key for pub (scoped by constraints when given).
func checkingDB(t testing.TB, pub asserts.PublicKey, constraints []any) *asserts.Database {
	t.Helper()
	rootPub := asserts.RSAPrivateKey(rootPriv).PublicKey()
	db, err := asserts.OpenDatabase(&asserts.DatabaseConfig{
		Backstore: asserts.NewMemoryBackstore(),
		Trusted:   []asserts.Assertion{account(t, rootID), accountKey(t, rootID, rootPub, nil)},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []asserts.Assertion{account(t, brandID), accountKey(t, brandID, pub, constraints)} {
		if err := db.Add(a); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

func tokenSigner(t testing.TB) *assertion.Signer {
	t.Helper()
	s, err := assertion.NewSigner(tokenKey.WithContext(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func tokenPub() asserts.PublicKey { return asserts.RSAPublicKey(tokenKey.Info().Public) }

func devicePub() asserts.PublicKey { return asserts.RSAPrivateKey(devPriv).PublicKey() }

// every signed type, through the token key.
func signedExamples(t *testing.T, s *assertion.Signer) map[string]assertion.Signed {
	t.Helper()
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	out := map[string]assertion.Signed{}
	must := func(name string, sg assertion.Signed, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out[name] = sg
	}
	sg, err := s.Serial(assertion.Serial{BrandID: brandID, Model: "foo-1", Serial: "SN-001", DeviceKey: devicePub(), Timestamp: now})
	must("serial", sg, err)
	sg, err = s.Serial(assertion.Serial{BrandID: brandID, Model: "foo-1", Serial: "SN-002", DeviceKey: devicePub(), Timestamp: now,
		Revision: 2, Body: []byte("HW-DETAILS: x\nmac: 00:11\n")})
	must("serial with body", sg, err)
	sg, err = s.Model(brandID, map[string]any{
		"model": "foo-1", "architecture": "amd64", "gadget": "pc", "kernel": "pc-kernel", "base": "core18",
		"timestamp": now.Format(time.RFC3339), "required-snaps": []any{"hello", "htop"},
	}, nil)
	must("model core18", sg, err)
	sg, err = s.Model(brandID, map[string]any{
		"model": "foo-20", "architecture": "amd64", "base": "core22", "grade": "signed",
		"timestamp": now.Format(time.RFC3339),
		"snaps": []any{
			map[string]any{"name": "pc", "id": "UqFziVZDHLSyO3TqSWgNBoAdHbLI4dAH", "type": "gadget", "default-channel": "22/stable"},
			map[string]any{"name": "pc-kernel", "id": "pYVQrBcKmBa0mZ4CCN7ExT6jH8rY1hza", "type": "kernel", "default-channel": "22/stable"},
			map[string]any{"name": "core22", "id": "amcUKQILKXHHTlmSa7NMdnXSx02dNeeT", "type": "base", "default-channel": "latest/stable"},
		},
	}, nil)
	must("model core22", sg, err)
	sg, err = s.SystemUser(assertion.SystemUser{BrandID: brandID, Email: "ops@example.com", Username: "ops", Name: "Ops",
		Models: []string{"foo-1"}, Password: "s3cret pass", Since: now, Until: now.AddDate(1, 0, 0)})
	must("system-user password", sg, err)
	sg, err = s.SystemUser(assertion.SystemUser{BrandID: brandID, Email: "ops@example.com", Username: "ops2", Name: "Ops",
		Models: []string{"foo-1"}, Serials: []string{"SN-001"}, SSHKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA ops@host"},
		Since: now, Until: now.AddDate(1, 0, 0)})
	must("system-user ssh-keys serials", sg, err)
	sg, err = s.Preseed(assertion.Preseed{BrandID: brandID, Model: "foo-20", SystemLabel: "20261126",
		Snaps:           []assertion.PreseedSnap{{Name: "pc", ID: "UqFziVZDHLSyO3TqSWgNBoAdHbLI4dAH", Revision: 145}, {Name: "local-snap"}},
		ArtifactSHA3384: "KPIl7M4vQ9d4AUjkoU41TGAwtOMLc_bWUCeW8AvdRWD4_xcP60Oo4ABs1No7BZsO", Timestamp: now})
	must("preseed", sg, err)
	return out
}

func TestEveryTypeThroughTheToken(t *testing.T) {
	s := tokenSigner(t)
	db := checkingDB(t, tokenPub(), nil)
	for name, sg := range signedExamples(t, s) {
		t.Run(name, func(t *testing.T) {
			a, err := asserts.Decode(sg.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if a.SignKeyID() != s.KeyID() || a.AuthorityID() != brandID {
				t.Fatalf("signed by %s for %s", a.SignKeyID(), a.AuthorityID())
			}
			if err := db.Check(a); err != nil {
				t.Fatalf("snapd refuses it: %v\n%s", err, sg.Bytes)
			}
		})
	}
	// Format 1 where the content needs it.
	ex := signedExamples(t, s)
	if f := ex["system-user ssh-keys serials"].Assertion.Format(); f != 1 {
		t.Errorf("system-user with serials has format %d", f)
	}
	su := ex["system-user password"].Assertion.(*asserts.SystemUser)
	if !strings.HasPrefix(su.Password(), "$6$") || strings.Contains(string(ex["system-user password"].Bytes), "s3cret") {
		t.Errorf("password not SHA-512 crypt hashed: %q", su.Password())
	}
	if m := ex["model core22"].Assertion.(*asserts.Model); m.Grade() != asserts.ModelSigned || len(m.EssentialSnaps()) != 3 {
		t.Errorf("core22 model decoded as grade %s with %d essential snaps", m.Grade(), len(m.EssentialSnaps()))
	}
}

// tamper changes one thing in an encoded assertion.
func tamper(b []byte, from, to string) []byte {
	return bytes.Replace(b, []byte(from), []byte(to), 1)
}

func TestTamperingFails(t *testing.T) {
	s := tokenSigner(t)
	db := checkingDB(t, tokenPub(), nil)
	ex := signedExamples(t, s)
	for name, tc := range map[string]struct {
		name, from, to string
	}{
		"serial header":      {"serial", "serial: SN-001", "serial: SN-009"},
		"serial model":       {"serial", "model: foo-1", "model: foo-2"},
		"serial body":        {"serial with body", "mac: 00:11", "mac: 00:12"},
		"model gadget":       {"model core18", "gadget: pc", "gadget: px"},
		"system-user name":   {"system-user password", "username: ops", "username: ope"},
		"system-user serial": {"system-user ssh-keys serials", "SN-001", "SN-00X"},
		"preseed label":      {"preseed", "system-label: 20261126", "system-label: 20261127"},
	} {
		t.Run(name, func(t *testing.T) {
			orig := ex[tc.name].Bytes
			bad := tamper(orig, tc.from, tc.to)
			if bytes.Equal(bad, orig) {
				t.Fatalf("%q not found in:\n%s", tc.from, orig)
			}
			a, err := asserts.Decode(bad)
			if err != nil {
				return // refused already
			}
			if err := db.Check(a); err == nil {
				t.Fatal("tampered assertion accepted")
			}
		})
	}
}

// TestConstraintsAsSnapdDecides scopes the brand's account-key to serials
// of foo-.* models and lets snapd decide.
func TestConstraintsAsSnapdDecides(t *testing.T) {
	s := tokenSigner(t)
	db := checkingDB(t, tokenPub(), []any{
		map[string]any{"headers": map[string]any{"type": "serial", "model": "foo-.*"}},
	})
	now := time.Now()
	ok, err := s.Serial(assertion.Serial{BrandID: brandID, Model: "foo-1", Serial: "A1", DeviceKey: devicePub(), Timestamp: now})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Check(ok.Assertion); err != nil {
		t.Fatalf("serial for foo-1 refused: %v", err)
	}
	other, _ := s.Serial(assertion.Serial{BrandID: brandID, Model: "bar-1", Serial: "A2", DeviceKey: devicePub(), Timestamp: now})
	if err := db.Check(other.Assertion); err == nil {
		t.Fatal("serial for bar-1 accepted by a foo-.* key")
	}
	xfoo, _ := s.Serial(assertion.Serial{BrandID: brandID, Model: "xfoo-1", Serial: "A3", DeviceKey: devicePub(), Timestamp: now})
	if err := db.Check(xfoo.Assertion); err == nil {
		t.Fatal("serial for xfoo-1 accepted: constraint not anchored")
	}
	ex := signedExamples(t, s)
	for _, name := range []string{"model core18", "system-user password"} {
		if err := db.Check(ex[name].Assertion); err == nil {
			t.Errorf("%s accepted from a serial-only key", name)
		}
	}
}

// TestContentIdenticalToSnapd compares our content with snapd's for the
// same headers, key and type.
func TestContentIdenticalToSnapd(t *testing.T) {
	pk := asserts.RSAPrivateKey(otherPriv)
	kpm := asserts.NewMemoryKeypairManager()
	sdb, err := asserts.OpenDatabase(&asserts.DatabaseConfig{Backstore: asserts.NewMemoryBackstore(), KeypairManager: kpm})
	if err != nil {
		t.Fatal(err)
	}
	if err := sdb.ImportKey(pk); err != nil {
		t.Fatal(err)
	}
	ours, err := assertion.NewSigner(otherPriv) // used only as a crypto.Signer
	if err != nil {
		t.Fatal(err)
	}
	if ours.KeyID() != pk.PublicKey().ID() {
		t.Fatalf("key id %s, snapd %s", ours.KeyID(), pk.PublicKey().ID())
	}
	devKey, _ := asserts.EncodePublicKey(devicePub())
	cases := []struct {
		typ     *asserts.AssertionType
		headers map[string]any
		body    []byte
	}{
		{asserts.SerialType, map[string]any{"authority-id": brandID, "brand-id": brandID, "model": "foo-1", "serial": "S1",
			"device-key": string(devKey), "device-key-sha3-384": devicePub().ID(), "timestamp": "2026-11-26T12:00:00Z"}, []byte("body\nline 2")},
		{asserts.SerialType, map[string]any{"authority-id": brandID, "brand-id": brandID, "model": "foo-1", "serial": "S2", "revision": "3",
			"device-key": string(devKey), "device-key-sha3-384": devicePub().ID(), "timestamp": "2026-11-26T12:00:00Z"}, nil},
		{asserts.ModelType, map[string]any{"authority-id": brandID, "brand-id": brandID, "series": "16", "model": "foo-20",
			"architecture": "amd64", "base": "core22", "grade": "dangerous", "timestamp": "2026-11-26T12:00:00Z",
			"display-name": "Multi\nline",
			"snaps": []any{
				map[string]any{"name": "pc", "id": "UqFziVZDHLSyO3TqSWgNBoAdHbLI4dAH", "type": "gadget", "default-channel": "22/stable"},
				map[string]any{"name": "pc-kernel", "id": "pYVQrBcKmBa0mZ4CCN7ExT6jH8rY1hza", "type": "kernel", "default-channel": "22/stable"},
				map[string]any{"name": "core22", "id": "amcUKQILKXHHTlmSa7NMdnXSx02dNeeT", "type": "base", "default-channel": "latest/stable"},
				map[string]any{"name": "hello", "id": "buPKUD3TKqCOgLEjjHx5kSiCpIs5cMuQ", "type": "app", "modes": []any{"run", "ephemeral"}, "presence": "optional"},
			}}, nil},
		{asserts.SystemUserType, map[string]any{"authority-id": brandID, "brand-id": brandID, "email": "a@b.c", "username": "u1",
			"name": "U", "models": []any{"foo-1"}, "serials": []any{"S1", "S2"}, "ssh-keys": []any{"ssh-rsa AAAA x"},
			"since": "2026-01-01T00:00:00Z", "until": "2027-01-01T00:00:00Z", "format": "1"}, nil},
		{asserts.PreseedType, map[string]any{"authority-id": brandID, "brand-id": brandID, "series": "16", "model": "foo-20",
			"system-label": "20261126", "timestamp": "2026-11-26T12:00:00Z", "artifact-sha3-384": "KPIl7M4vQ9d4AUjkoU41TGAwtOMLc_bWUCeW8AvdRWD4_xcP60Oo4ABs1No7BZsO",
			"snaps": []any{map[string]any{"name": "pc", "id": "UqFziVZDHLSyO3TqSWgNBoAdHbLI4dAH", "revision": "145"}}}, nil},
	}
	for _, tc := range cases {
		want, err := sdb.Sign(tc.typ, tc.headers, tc.body, pk.PublicKey().ID())
		if err != nil {
			t.Fatalf("snapd signing %s: %v", tc.typ.Name, err)
		}
		got, err := ours.Sign(tc.typ, tc.headers, tc.body)
		if err != nil {
			t.Fatalf("our signing %s: %v", tc.typ.Name, err)
		}
		wc, _ := want.Signature()
		gc, _ := got.Assertion.Signature()
		if !bytes.Equal(wc, gc) {
			t.Errorf("%s content differs\n--- snapd\n%s\n--- keyrack\n%s", tc.typ.Name, wc, gc)
		}
	}
	// The account-key-request is self-signed; compare with snapd's too.
	akrH := map[string]any{"account-id": brandID, "name": "k1", "public-key-sha3-384": pk.PublicKey().ID(), "since": "2026-11-26T12:00:00Z"}
	body, _ := asserts.EncodePublicKey(pk.PublicKey())
	want, err := asserts.SignWithoutAuthority(asserts.AccountKeyRequestType, akrH, body, pk)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ours.AccountKeyRequest(brandID, "k1", time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC), nil)
	if err != nil {
		t.Fatal(err)
	}
	wc, _ := want.Signature()
	gc, _ := got.Assertion.Signature()
	if !bytes.Equal(wc, gc) {
		t.Errorf("account-key-request content differs\n--- snapd\n%s\n--- keyrack\n%s", wc, gc)
	}
}

func TestAccountKeyRequestFromToken(t *testing.T) {
	s := tokenSigner(t)
	sg, err := s.AccountKeyRequest(brandID, "serials-2026", time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	akr := sg.Assertion.(*asserts.AccountKeyRequest)
	if akr.PublicKeyID() != s.KeyID() || akr.AccountID() != brandID {
		t.Fatalf("%+v", akr.Headers())
	}
	if err := asserts.SignatureCheck(akr, tokenPub()); err != nil {
		t.Fatal(err)
	}
}

func TestSignerRefuses(t *testing.T) {
	small, _ := rsa.GenerateKey(rand.Reader, 2048)
	if _, err := assertion.NewSigner(small); err == nil {
		t.Fatal("signer accepted RSA-2048")
	}
	s := tokenSigner(t)
	for name, h := range map[string]map[string]any{
		"number value":  {"authority-id": brandID, "brand-id": brandID, "model": "m", "serial": "s", "revision": 3},
		"sets type":     {"type": "model"},
		"missing key":   {"authority-id": brandID, "brand-id": brandID, "model": "m"},
		"slash in key":  {"authority-id": brandID, "brand-id": brandID, "model": "m/x", "serial": "s"},
		"bad revision":  {"authority-id": brandID, "brand-id": brandID, "model": "m", "serial": "s", "revision": "-1"},
		"bad header nm": {"bad name": "x"},
	} {
		if _, err := s.Sign(asserts.SerialType, h, nil); err == nil {
			t.Errorf("%s: signed", name)
		}
	}
	if _, err := s.Model("other-brand", map[string]any{"brand-id": brandID}, nil); err == nil {
		t.Error("model for another brand signed")
	}
	if _, err := s.Preseed(assertion.Preseed{BrandID: brandID, Model: "m", SystemLabel: "Bad Label"}); err == nil {
		t.Error("bad system label signed")
	}
}

func serialRequest(t *testing.T, model string) []byte {
	t.Helper()
	devKey, _ := asserts.EncodePublicKey(devicePub())
	a, err := asserts.SignWithoutAuthority(asserts.SerialRequestType, map[string]any{
		"brand-id": brandID, "model": model, "request-id": "REQ1", "device-key": string(devKey),
	}, []byte("HW: details"), asserts.RSAPrivateKey(devPriv))
	if err != nil {
		t.Fatal(err)
	}
	return asserts.Encode(a)
}

func TestParseSerialRequestAndStream(t *testing.T) {
	good := serialRequest(t, "foo-1")
	req, err := assertion.ParseSerialRequest(good)
	if err != nil {
		t.Fatal(err)
	}
	if req.RequestID() != "REQ1" || req.DeviceKey().ID() != devicePub().ID() {
		t.Fatalf("%v", req.Headers())
	}
	if _, err := assertion.ParseSerialRequest(tamper(good, "HW: details", "HW: detailz")); err == nil {
		t.Fatal("tampered serial-request accepted")
	}
	if _, err := assertion.ParseSerialRequest([]byte("garbage")); err == nil {
		t.Fatal("garbage accepted")
	}
	s := tokenSigner(t)
	model := signedExamples(t, s)["model core18"]
	stream := append(append(append([]byte{}, good...), '\n'), model.Bytes...)
	ds, err := assertion.ParseDeviceStream(bytes.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	if ds.Model.Model() != "foo-1" || ds.Request == nil || ds.OldSerial != nil {
		t.Fatalf("%+v", ds)
	}
	if err := assertion.CheckModel(ds.Model, brandID, "foo-1", tokenPub()); err != nil {
		t.Fatal(err)
	}
	if err := assertion.CheckModel(ds.Model, brandID, "foo-2"); err == nil {
		t.Fatal("model mismatch accepted")
	}
	if err := assertion.CheckModel(ds.Model, brandID, "foo-1", devicePub()); err == nil {
		t.Fatal("model signed by an unknown key accepted")
	}
	for name, in := range map[string][]byte{
		"no model":          good,
		"two requests":      append(append(append([]byte{}, good...), '\n'), good...),
		"oversize":          bytes.Repeat([]byte("x"), assertion.MaxStreamBytes+10),
		"truncated request": append(append([]byte{}, good[:len(good)/2]...), model.Bytes...),
	} {
		if _, err := assertion.ParseDeviceStream(bytes.NewReader(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A model whose signature was cut still decodes; the signature check
	// against the brand key catches it.
	cut := append(append(append([]byte{}, good...), '\n'), model.Bytes[:len(model.Bytes)-40]...)
	ds, err = assertion.ParseDeviceStream(bytes.NewReader(append(cut, '\n')))
	if err == nil {
		if err := assertion.CheckModel(ds.Model, brandID, "foo-1", tokenPub()); err == nil {
			t.Error("model with a cut signature passed CheckModel")
		}
	}
}

func TestSHA512CryptVectors(t *testing.T) {
	// From the specification's test vectors.
	for _, v := range []struct {
		pw, salt string
		rounds   int
		want     string
	}{
		{"Hello world!", "saltstring", 0, "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"},
		{"Hello world!", "saltstringsaltstring", 10000, "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."},
		{"This is just a test", "toolongsaltstring", 5000, "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0"},
	} {
		got, err := assertion.SHA512Crypt(v.pw, v.salt, v.rounds)
		if err != nil || got != v.want {
			t.Errorf("SHA512Crypt(%q, %q, %d) = %s, want %s", v.pw, v.salt, v.rounds, got, v.want)
		}
	}
	a, _ := assertion.SHA512Crypt("pw", "", 0)
	b, _ := assertion.SHA512Crypt("pw", "", 0)
	if a == b || len(a) != 3+16+1+86 {
		t.Errorf("random salts: %s %s", a, b)
	}
}
