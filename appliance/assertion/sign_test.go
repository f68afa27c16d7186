package assertion_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance/assertion"
)

const (
	pcID     = "UqFziVZDHLSyO3TqSWgNBoAdHbLI4dAH"
	kernelID = "pYVQrBcKmBa0mZ4CCN7ExT6jH8rY1hza"
	core22ID = "amcUKQILKXHHTlmSa7NMdnXSx02dNeeT"
	helloID  = "buPKUD3TKqCOgLEjjHx5kSiCpIs5cMuQ"
	artifact = "KPIl7M4vQ9d4AUjkoU41TGAwtOMLc_bWUCeW8AvdRWD4_xcP60Oo4ABs1No7BZsO"
	sshKey   = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA ops@host"
)

// example is one signed assertion and how to tamper with it.
type example struct {
	signed assertion.Signed
	// header is a "name: value" line of the encoding and a same-length
	// replacement that still decodes.
	header, headerTo string
	// body, bodyTo likewise for the body, if it has one.
	body, bodyTo string
}

// examples signs one of every kind the appliance makes, through s.
func examples(t *testing.T, s *assertion.Signer) map[string]example {
	t.Helper()
	out := map[string]example{}
	add := func(name string, sg assertion.Signed, err error, ex example) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ex.signed = sg
		out[name] = ex
	}
	sg, err := s.Serial(assertion.Serial{BrandID: brandID, Model: "foo-1", Serial: "SN-001", DeviceKey: devicePub(), Timestamp: fixed})
	add("serial", sg, err, example{header: "serial: SN-001", headerTo: "serial: SN-009"})

	enc, err := asserts.EncodePublicKey(devicePub())
	if err != nil {
		t.Fatal(err)
	}
	sg, err = s.Serial(assertion.Serial{BrandID: brandID, Model: "foo-1", Serial: "SN-002", DeviceKeyEncoded: string(enc),
		DeviceKeySHA3384: devicePub().ID(), Timestamp: fixed, Revision: 2, Body: []byte("HW-DETAILS: x\nmac: 00:11:22\n")})
	add("serial with body", sg, err, example{header: "model: foo-1", headerTo: "model: foo-2", body: "mac: 00:11:22", bodyTo: "mac: 00:11:23"})

	sg, err = s.SignModel(assertion.Model{BrandID: brandID, Model: "foo-18", Architecture: "amd64", Base: "core18",
		Gadget: "pc=18", Kernel: "pc-kernel=18", RequiredSnaps: []string{"hello", "htop"}, DisplayName: "Foo 18", Timestamp: fixed})
	add("model core18", sg, err, example{header: "gadget: pc=18", headerTo: "gadget: px=18"})

	sg, err = s.SignModel(assertion.Model{BrandID: brandID, Model: "foo-22", Architecture: "amd64", Base: "core22", Grade: "signed",
		Timestamp: fixed, SerialAuthority: []string{"other-brand"},
		Snaps: []assertion.ModelSnap{
			{Name: "pc", ID: pcID, Type: "gadget", DefaultChannel: "22/stable"},
			{Name: "pc-kernel", ID: kernelID, Type: "kernel", DefaultChannel: "22/stable"},
			{Name: "core22", ID: core22ID, Type: "base", DefaultChannel: "latest/stable"},
			{Name: "hello", ID: helloID, Presence: "optional", Modes: []string{"run", "ephemeral"}},
		}})
	add("model core22", sg, err, example{header: "architecture: amd64", headerTo: "architecture: arm64"})

	sg, err = s.Model(brandID, map[string]any{
		"model": "foo-24", "architecture": "arm64", "base": "core24", "grade": "dangerous", "timestamp": fixed.Format(time.RFC3339),
		"snaps": []any{
			map[string]any{"name": "pi", "type": "gadget", "default-channel": "24/stable"},
			map[string]any{"name": "pi-kernel", "type": "kernel", "default-channel": "24/stable"},
		},
	}, []byte("free-form body\n"))
	add("model from raw headers", sg, err, example{header: "architecture: arm64", headerTo: "architecture: arm65", body: "free-form", bodyTo: "free-farm"})

	sg, err = s.SystemUser(assertion.SystemUser{BrandID: brandID, Email: "ops@example.com", Username: "ops", Name: "Ops",
		Models: []string{"foo-1", "foo-22"}, Password: "s3cret pass", Since: fixed, Until: fixed.AddDate(1, 0, 0)})
	add("system-user password", sg, err, example{header: "username: ops", headerTo: "username: opt"})

	sg, err = s.SystemUser(assertion.SystemUser{BrandID: brandID, Email: "ops2@example.com", Username: "ops2",
		Models: []string{"foo-1"}, Serials: []string{"SN-001", "SN-002"}, SSHKeys: []string{sshKey},
		Since: fixed, Until: fixed.AddDate(0, 1, 0)})
	add("system-user ssh-keys serials", sg, err, example{header: "  - SN-001", headerTo: "  - SN-00X"})

	sg, err = s.Preseed(assertion.Preseed{BrandID: brandID, Model: "foo-22", SystemLabel: "20261126",
		Snaps:           []assertion.PreseedSnap{{Name: "pc", ID: pcID, Revision: 145}, {Name: "local-snap"}},
		ArtifactSHA3384: artifact, Timestamp: fixed})
	add("preseed", sg, err, example{header: "system-label: 20261126", headerTo: "system-label: 20261127"})

	sg, err = s.AccountKeyRequest(brandID, "serials-2026", since, nil)
	add("account-key-request", sg, err, example{header: "name: serials-2026", headerTo: "name: serials-2027"})
	return out
}

// TestEveryTypeAcceptedBySnapd: what we sign, a device's database (trusting
// only the root) checks and adds.
func TestEveryTypeAcceptedBySnapd(t *testing.T) {
	s := brandSigner(t)
	db := deviceDB(t, nil)
	ex := examples(t, s)
	for name, e := range ex {
		t.Run(name, func(t *testing.T) {
			a, err := asserts.Decode(e.signed.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if a.SignKeyID() != s.KeyID() || !bytes.Equal(asserts.Encode(a), e.signed.Bytes) {
				t.Fatalf("decoded signed by %s; re-encodes to\n%s", a.SignKeyID(), asserts.Encode(a))
			}
			if err := db.Check(a); err != nil {
				t.Fatalf("snapd refuses it: %v\n%s", err, e.signed.Bytes)
			}
			if err := db.Add(a); err != nil {
				t.Fatalf("snapd does not add it: %v", err)
			}
		})
	}

	if f := ex["system-user ssh-keys serials"].signed.Assertion.Format(); f != 1 {
		t.Errorf("system-user with serials has format %d, want 1", f)
	}
	if f := ex["system-user password"].signed.Assertion.Format(); f != 0 {
		t.Errorf("system-user without serials has format %d, want 0", f)
	}
	su := ex["system-user password"].signed.Assertion.(*asserts.SystemUser)
	if pw := su.Password(); !strings.HasPrefix(pw, "$6$") || len(pw) != 3+16+1+86 {
		t.Errorf("password %q is not a default-rounds SHA-512 crypt hash with a 16 character salt", pw)
	}
	salt := strings.Split(su.Password(), "$")[2]
	if again, _ := assertion.SHA512Crypt("s3cret pass", salt, 0); again != su.Password() {
		t.Errorf("the hash does not verify the password")
	}
	if bytes.Contains(ex["system-user password"].signed.Bytes, []byte("s3cret")) {
		t.Error("plaintext password in the assertion")
	}
	m := ex["model core22"].signed.Assertion.(*asserts.Model)
	if m.Grade() != asserts.ModelSigned || len(m.EssentialSnaps()) != 3 || len(m.SnapsWithoutEssential()) != 1 ||
		m.SnapsWithoutEssential()[0].Presence != "optional" {
		t.Errorf("core22 model decoded as grade %s, %d essential snaps, %v", m.Grade(), len(m.EssentialSnaps()), m.SnapsWithoutEssential())
	}
	if sa := m.SerialAuthority(); len(sa) != 2 {
		t.Errorf("serial-authority %v", sa)
	}
	ser := ex["serial with body"].signed.Assertion.(*asserts.Serial)
	if ser.Revision() != 2 || ser.DeviceKey().ID() != devicePub().ID() || string(ser.Body()) != "HW-DETAILS: x\nmac: 00:11:22\n" {
		t.Errorf("serial decoded as revision %d, key %s, body %q", ser.Revision(), ser.DeviceKey().ID(), ser.Body())
	}
	p := ex["preseed"].signed.Assertion.(*asserts.Preseed)
	if sn := p.Snaps(); len(sn) != 2 || sn[0].Revision != 145 || sn[1].SnapID != "" {
		t.Errorf("preseed snaps %+v", sn)
	}
	akr := ex["account-key-request"].signed.Assertion.(*asserts.AccountKeyRequest)
	if akr.PublicKeyID() != s.KeyID() || akr.AccountID() != brandID || !akr.Until().IsZero() {
		t.Errorf("account-key-request %v", akr.Headers())
	}
}

// TestTamperingFails: change one header, the body or the signature of
// each signed assertion, and the device refuses it.
func TestTamperingFails(t *testing.T) {
	db := deviceDB(t, nil)
	for name, e := range examples(t, brandSigner(t)) {
		orig := e.signed.Bytes
		cases := map[string][2]string{"header": {e.header, e.headerTo}}
		if e.body != "" {
			cases["body"] = [2]string{e.body, e.bodyTo}
		}
		// One character in the middle of the signature's base64.
		_, sig := e.signed.Assertion.Signature()
		mid := len(orig) - len(sig) + len(sig)/2
		flipped := byte('A')
		if orig[mid] == 'A' {
			flipped = 'B'
		}
		for what, c := range cases {
			t.Run(name+"/"+what, func(t *testing.T) {
				bad := bytes.Replace(orig, []byte(c[0]), []byte(c[1]), 1)
				if bytes.Equal(bad, orig) || len(c[0]) != len(c[1]) {
					t.Fatalf("%q not found in:\n%s", c[0], orig)
				}
				a, err := asserts.Decode(bad)
				if err != nil {
					t.Fatalf("the tampered assertion should still decode, to reach the signature check: %v", err)
				}
				if err := db.Check(a); err == nil || !strings.Contains(err.Error(), "failed signature verification") {
					t.Fatalf("tampered %s: check says %v", what, err)
				}
			})
		}
		t.Run(name+"/signature", func(t *testing.T) {
			bad := append([]byte(nil), orig...)
			bad[mid] = flipped
			a, err := asserts.Decode(bad)
			if err != nil {
				return // refused before any check
			}
			if err := db.Check(a); err == nil {
				t.Fatal("tampered signature accepted")
			}
		})
	}
}

// TestScopedKeyAsSnapdDecides registers the brand key with constraints and
// lets snapd's database decide what it may sign.
func TestScopedKeyAsSnapdDecides(t *testing.T) {
	s := brandSigner(t)
	ex := examples(t, s)
	serial := func(model string) asserts.Assertion {
		t.Helper()
		sg, err := s.Serial(assertion.Serial{BrandID: brandID, Model: model, Serial: "A-" + model, DeviceKey: devicePub(), Timestamp: fixed})
		if err != nil {
			t.Fatal(err)
		}
		return sg.Assertion
	}
	const refused = "does not match signing constraints"

	db := deviceDB(t, []any{map[string]any{"headers": map[string]any{"type": "serial", "model": "foo-.*"}}})
	if err := db.Check(serial("foo-1")); err != nil {
		t.Fatalf("serial for foo-1 refused: %v", err)
	}
	for _, m := range []string{"bar-1", "xfoo-1"} {
		if err := db.Check(serial(m)); err == nil || !strings.Contains(err.Error(), refused) {
			t.Errorf("serial for %s from a foo-.* serial key: %v", m, err)
		}
	}
	for _, name := range []string{"model core18", "model core22", "system-user password", "preseed"} {
		if err := db.Check(ex[name].signed.Assertion); err == nil || !strings.Contains(err.Error(), refused) {
			t.Errorf("%s from a serial-only key: %v", name, err)
		}
	}

	// Two roles: serials of foo-* models and system-users.
	db = deviceDB(t, []any{
		map[string]any{"headers": map[string]any{"type": "serial", "model": "foo-.*"}},
		map[string]any{"headers": map[string]any{"type": "system-user"}},
	})
	for _, name := range []string{"serial", "system-user password", "system-user ssh-keys serials"} {
		if err := db.Check(ex[name].signed.Assertion); err != nil {
			t.Errorf("%s refused by a serial+system-user key: %v", name, err)
		}
	}
	if err := db.Check(ex["model core18"].signed.Assertion); err == nil || !strings.Contains(err.Error(), refused) {
		t.Errorf("model from a serial+system-user key: %v", err)
	}
}

// TestBytesIdenticalToSnapd signs the same headers with the same key
// through snapd's own signing and through ours, with our clock set to
// snapd's signature time: the encodings must be equal byte for byte.
func TestBytesIdenticalToSnapd(t *testing.T) {
	pk := asserts.RSAPrivateKey(brandPriv)
	sdb, err := asserts.OpenDatabase(&asserts.DatabaseConfig{KeypairManager: asserts.NewMemoryKeypairManager()})
	if err != nil {
		t.Fatal(err)
	}
	if err := sdb.ImportKey(pk); err != nil {
		t.Fatal(err)
	}
	if id, _ := assertion.KeyID(&brandPriv.PublicKey); id != pk.PublicKey().ID() {
		t.Fatalf("key id %s, snapd says %s", id, pk.PublicKey().ID())
	}
	devKey, err := asserts.EncodePublicKey(devicePub())
	if err != nil {
		t.Fatal(err)
	}
	ts := fixed.Format(time.RFC3339)
	serialH := func(serial string, extra map[string]any) map[string]any {
		h := map[string]any{"authority-id": brandID, "brand-id": brandID, "model": "foo-1", "serial": serial,
			"device-key": string(devKey), "device-key-sha3-384": devicePub().ID(), "timestamp": ts}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	type tc struct {
		name    string
		typ     *asserts.AssertionType
		headers map[string]any
		body    []byte
		// ours signs through a typed builder instead of Sign(headers).
		ours func(s *assertion.Signer) (assertion.Signed, error)
	}
	cases := []tc{
		{name: "serial with body", typ: asserts.SerialType, headers: serialH("S1", nil), body: []byte("body\nline 2\n\nafter a blank line")},
		{name: "serial revision", typ: asserts.SerialType, headers: serialH("S2", map[string]any{"revision": "3"})},
		{name: "serial, awkward extra headers", typ: asserts.SerialType, headers: serialH("S3", map[string]any{
			"x-multi": "line 1\n\n  indented line 3\n",
			"x-empty": "",
			"x-list": []any{"a", "", "-dash", "multi\nline", []any{"nested", "list"},
				map[string]any{"k": "v", "m": "multi\nline", "l": []any{"x", map[string]any{"deep": "y"}}}},
			"x-map": map[string]any{"b": "2", "a": []any{"1"}, "c": map[string]any{"z": "last", "y": "first\nsecond"}},
		})},
		{name: "serial from the typed builder", typ: asserts.SerialType, headers: serialH("S4", nil),
			ours: func(s *assertion.Signer) (assertion.Signed, error) {
				return s.Serial(assertion.Serial{BrandID: brandID, Model: "foo-1", Serial: "S4", DeviceKey: devicePub(), Timestamp: fixed})
			}},
		{name: "model core22", typ: asserts.ModelType, headers: map[string]any{"authority-id": brandID, "brand-id": brandID,
			"series": "16", "model": "foo-22", "architecture": "amd64", "base": "core22", "grade": "dangerous", "timestamp": ts,
			"display-name": "Multi\nline",
			"snaps": []any{
				map[string]any{"name": "pc", "id": pcID, "type": "gadget", "default-channel": "22/stable"},
				map[string]any{"name": "pc-kernel", "id": kernelID, "type": "kernel", "default-channel": "22/stable"},
				map[string]any{"name": "core22", "id": core22ID, "type": "base", "default-channel": "latest/stable"},
				map[string]any{"name": "hello", "id": helloID, "modes": []any{"run", "ephemeral"}, "presence": "optional"},
			}},
			ours: func(s *assertion.Signer) (assertion.Signed, error) {
				return s.SignModel(assertion.Model{BrandID: brandID, Model: "foo-22", Architecture: "amd64", Base: "core22",
					Grade: "dangerous", Timestamp: fixed, DisplayName: "Multi\nline", Snaps: []assertion.ModelSnap{
						{Name: "pc", ID: pcID, Type: "gadget", DefaultChannel: "22/stable"},
						{Name: "pc-kernel", ID: kernelID, Type: "kernel", DefaultChannel: "22/stable"},
						{Name: "core22", ID: core22ID, Type: "base", DefaultChannel: "latest/stable"},
						{Name: "hello", ID: helloID, Modes: []string{"run", "ephemeral"}, Presence: "optional"},
					}})
			}},
		{name: "model core18", typ: asserts.ModelType, headers: map[string]any{"authority-id": brandID, "brand-id": brandID,
			"series": "16", "model": "foo-18", "architecture": "armhf", "base": "core18", "gadget": "pi=18", "kernel": "pi-kernel=18",
			"required-snaps": []any{"hello"}, "timestamp": ts},
			ours: func(s *assertion.Signer) (assertion.Signed, error) {
				return s.SignModel(assertion.Model{BrandID: brandID, Model: "foo-18", Architecture: "armhf", Base: "core18",
					Gadget: "pi=18", Kernel: "pi-kernel=18", RequiredSnaps: []string{"hello"}, Timestamp: fixed})
			}},
		{name: "system-user format 1", typ: asserts.SystemUserType, headers: map[string]any{"authority-id": brandID, "brand-id": brandID,
			"email": "a@example.com", "username": "u1", "name": "U", "models": []any{"foo-1"}, "serials": []any{"S1", "S2"},
			"ssh-keys": []any{sshKey}, "password": "$6$rounds=5000$saltsaltsaltsalt$" + strings.Repeat("A", 86),
			"since": "2026-01-01T00:00:00Z", "until": "2027-01-01T00:00:00Z", "format": "1"},
			ours: func(s *assertion.Signer) (assertion.Signed, error) {
				return s.SystemUser(assertion.SystemUser{BrandID: brandID, Email: "a@example.com", Username: "u1", Name: "U",
					Models: []string{"foo-1"}, Serials: []string{"S1", "S2"}, SSHKeys: []string{sshKey},
					PasswordHash: "$6$rounds=5000$saltsaltsaltsalt$" + strings.Repeat("A", 86),
					Since:        time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Until: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)})
			}},
		{name: "preseed", typ: asserts.PreseedType, headers: map[string]any{"authority-id": brandID, "brand-id": brandID,
			"series": "16", "model": "foo-22", "system-label": "20261126", "timestamp": ts, "artifact-sha3-384": artifact,
			"snaps": []any{map[string]any{"name": "pc", "id": pcID, "revision": "145"}, map[string]any{"name": "local"}}},
			ours: func(s *assertion.Signer) (assertion.Signed, error) {
				return s.Preseed(assertion.Preseed{BrandID: brandID, Model: "foo-22", SystemLabel: "20261126", Timestamp: fixed,
					ArtifactSHA3384: artifact, Snaps: []assertion.PreseedSnap{{Name: "pc", ID: pcID, Revision: 145}, {Name: "local"}}})
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want, err := sdb.Sign(c.typ, c.headers, c.body, pk.PublicKey().ID())
			if err != nil {
				t.Fatalf("snapd signing: %v", err)
			}
			compareWithSnapd(t, want, func(s *assertion.Signer) (assertion.Signed, error) {
				if c.ours != nil {
					return c.ours(s)
				}
				return s.Sign(c.typ, c.headers, c.body)
			})
		})
	}

	// Self-signed types go through SignWithoutAuthority in snapd.
	t.Run("account-key-request", func(t *testing.T) {
		body, _ := asserts.EncodePublicKey(pk.PublicKey())
		want, err := asserts.SignWithoutAuthority(asserts.AccountKeyRequestType, map[string]any{
			"account-id": brandID, "name": "k1", "public-key-sha3-384": pk.PublicKey().ID(),
			"since": ts, "until": "2030-01-01T00:00:00Z"}, body, pk)
		if err != nil {
			t.Fatal(err)
		}
		until := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
		compareWithSnapd(t, want, func(s *assertion.Signer) (assertion.Signed, error) {
			return s.AccountKeyRequest(brandID, "k1", fixed, &until)
		})
	})
	t.Run("serial-request by a device key", func(t *testing.T) {
		h := map[string]any{"brand-id": brandID, "model": "foo-1", "request-id": "REQ-1", "device-key": string(devKey)}
		want, err := asserts.SignWithoutAuthority(asserts.SerialRequestType, h, []byte("HW: x"), asserts.RSAPrivateKey(devicePriv))
		if err != nil {
			t.Fatal(err)
		}
		ds, err := assertion.NewSigner(&tokenKey{priv: devicePriv}, assertion.WithMinKeyBits(2048),
			assertion.WithClock(func() time.Time { return signatureTime(t, want) }))
		if err != nil {
			t.Fatal(err)
		}
		got, err := ds.Sign(asserts.SerialRequestType, h, []byte("HW: x"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes, asserts.Encode(want)) {
			t.Fatalf("differs\n--- snapd\n%s\n--- ours\n%s", asserts.Encode(want), got.Bytes)
		}
	})
}

func compareWithSnapd(t *testing.T, want asserts.Assertion, sign func(*assertion.Signer) (assertion.Signed, error)) {
	t.Helper()
	at := signatureTime(t, want)
	s := brandSigner(t, assertion.WithClock(func() time.Time { return at }))
	got, err := sign(s)
	if err != nil {
		t.Fatalf("our signing: %v", err)
	}
	wc, _ := want.Signature()
	gc, _ := got.Assertion.Signature()
	if !bytes.Equal(wc, gc) {
		t.Fatalf("content differs\n--- snapd\n%s\n--- ours\n%s", wc, gc)
	}
	// PKCS#1 v1.5 is deterministic: same content, key and creation
	// time give the same signature.
	if enc := asserts.Encode(want); !bytes.Equal(enc, got.Bytes) {
		t.Fatalf("encoding differs\n--- snapd\n%s\n--- ours\n%s", enc, got.Bytes)
	}
}

// TestInvalidInputNeverReachesTheKey: bad input is refused with
// ErrInvalidHeaders naming the problem, before any token operation.
func TestInvalidInputNeverReachesTheKey(t *testing.T) {
	tok := brandToken()
	s, err := assertion.NewSigner(tok)
	if err != nil {
		t.Fatal(err)
	}
	base := func(extra map[string]any) map[string]any {
		h := map[string]any{"authority-id": brandID, "brand-id": brandID, "model": "foo-1", "serial": "S1",
			"device-key":          func() string { b, _ := asserts.EncodePublicKey(devicePub()); return string(b) }(),
			"device-key-sha3-384": devicePub().ID(), "timestamp": fixed.Format(time.RFC3339)}
		for k, v := range extra {
			if v == nil {
				delete(h, k)
			} else {
				h[k] = v
			}
		}
		return h
	}
	signs := func(typ *asserts.AssertionType, h map[string]any, body []byte) func() (assertion.Signed, error) {
		return func() (assertion.Signed, error) { return s.Sign(typ, h, body) }
	}
	su := func(mod func(*assertion.SystemUser)) func() (assertion.Signed, error) {
		in := assertion.SystemUser{BrandID: brandID, Email: "a@example.com", Username: "a", Models: []string{"foo-1"},
			Password: "pw", Since: fixed, Until: fixed.AddDate(0, 1, 0)}
		mod(&in)
		return func() (assertion.Signed, error) { return s.SystemUser(in) }
	}
	model := func(mod func(*assertion.Model)) func() (assertion.Signed, error) {
		in := assertion.Model{BrandID: brandID, Model: "foo-22", Architecture: "amd64", Base: "core22", Timestamp: fixed,
			Snaps: []assertion.ModelSnap{{Name: "pc", ID: pcID, Type: "gadget"}, {Name: "pc-kernel", ID: kernelID, Type: "kernel"}}}
		mod(&in)
		return func() (assertion.Signed, error) { return s.SignModel(in) }
	}
	preseed := func(mod func(*assertion.Preseed)) func() (assertion.Signed, error) {
		in := assertion.Preseed{BrandID: brandID, Model: "foo-22", SystemLabel: "20261126", ArtifactSHA3384: artifact,
			Timestamp: fixed, Snaps: []assertion.PreseedSnap{{Name: "pc", ID: pcID, Revision: 1}}}
		mod(&in)
		return func() (assertion.Signed, error) { return s.Preseed(in) }
	}
	for _, c := range []struct {
		name string
		sign func() (assertion.Signed, error)
		want []string // substrings of the message
	}{
		{"number value", signs(asserts.SerialType, base(map[string]any{"revision": 3}), nil), []string{"revision", "int"}},
		{"nil value", signs(asserts.SerialType, base(map[string]any{"x": []any{nil}}), nil), []string{"x[0]", "no value"}},
		{"bad header name", signs(asserts.SerialType, base(map[string]any{"Bad_Name": "x"}), nil), []string{`"Bad_Name"`}},
		{"bad map key", signs(asserts.SerialType, base(map[string]any{"x": map[string]any{"a b": "c"}}), nil), []string{`"a b"`}},
		{"type disagrees", signs(asserts.SerialType, base(map[string]any{"type": "model"}), nil), []string{`"type"`}},
		{"sign key disagrees", signs(asserts.SerialType, base(map[string]any{"sign-key-sha3-384": "abc"}), nil), []string{"sign-key-sha3-384"}},
		{"body-length disagrees", signs(asserts.SerialType, base(map[string]any{"body-length": "3"}), []byte("ab")), []string{"body-length"}},
		{"missing primary key", signs(asserts.SerialType, base(map[string]any{"serial": nil}), nil), []string{`"serial"`, "missing"}},
		{"slash in primary key", signs(asserts.SerialType, base(map[string]any{"serial": "a/b"}), nil), []string{`"serial"`, "'/'"}},
		{"no authority-id", signs(asserts.SerialType, base(map[string]any{"authority-id": nil}), nil), []string{"authority-id"}},
		{"authority-id on a self-signed type", signs(asserts.AccountKeyRequestType, map[string]any{"authority-id": brandID}, nil), []string{"authority-id"}},
		{"negative revision", signs(asserts.SerialType, base(map[string]any{"revision": "-1"}), nil), []string{`"revision"`}},
		{"revision with leading zero", signs(asserts.SerialType, base(map[string]any{"revision": "01"}), nil), []string{`"revision"`}},
		{"format too low for serials", signs(asserts.SystemUserType, map[string]any{"authority-id": brandID, "brand-id": brandID,
			"email": "a@example.com", "username": "a", "models": []any{"m"}, "serials": []any{"s"}, "format": "0",
			"since": "2026-01-01T00:00:00Z", "until": "2027-01-01T00:00:00Z"}, nil), []string{"format 0", "lower"}},
		{"format too high", signs(asserts.SerialType, base(map[string]any{"format": "9"}), nil), []string{"format 9", "higher"}},
		{"body not UTF-8", signs(asserts.SerialType, base(nil), []byte{0xff, 0xfe}), []string{"UTF-8"}},
		{"unknown type", signs(&asserts.AssertionType{Name: "serial"}, base(nil), nil), []string{"assertion type"}},
		{"snapd's decoder refuses", signs(asserts.SerialType, base(map[string]any{"timestamp": "yesterday"}), nil), []string{"snapd would refuse", `"timestamp"`}},
		{"self-containing list", signs(asserts.SerialType, base(map[string]any{"x": func() any { l := []any{nil}; l[0] = l; return l }()}), nil), []string{"x[0]", "deep"}},
		{"empty nested list", signs(asserts.SerialType, base(map[string]any{"x": []any{[]any{}}}), nil), []string{"snapd would refuse"}},

		{"serial without device key", func() (assertion.Signed, error) {
			return s.Serial(assertion.Serial{BrandID: brandID, Model: "foo-1", Serial: "S", Timestamp: fixed})
		}, []string{"device-key"}},
		{"serial with a garbled device key", func() (assertion.Signed, error) {
			return s.Serial(assertion.Serial{BrandID: brandID, Model: "foo-1", Serial: "S", DeviceKeyEncoded: "AQID", Timestamp: fixed})
		}, []string{"device-key"}},
		{"serial with a wrong device key id", func() (assertion.Signed, error) {
			return s.Serial(assertion.Serial{BrandID: brandID, Model: "foo-1", Serial: "S", DeviceKey: devicePub(),
				DeviceKeySHA3384: brandPub().ID(), Timestamp: fixed})
		}, []string{"device-key-sha3-384"}},
		{"serial with an uppercase model", func() (assertion.Signed, error) {
			return s.Serial(assertion.Serial{BrandID: brandID, Model: "Foo", Serial: "S", DeviceKey: devicePub(), Timestamp: fixed})
		}, []string{"model", `"Foo"`}},
		{"serial without timestamp", func() (assertion.Signed, error) {
			return s.Serial(assertion.Serial{BrandID: brandID, Model: "foo-1", Serial: "S", DeviceKey: devicePub()})
		}, []string{"timestamp"}},
		{"serial with a bad brand", func() (assertion.Signed, error) {
			return s.Serial(assertion.Serial{BrandID: "b", Model: "foo-1", Serial: "S", DeviceKey: devicePub(), Timestamp: fixed})
		}, []string{"brand-id"}},

		{"model snaps with gadget header", model(func(m *assertion.Model) { m.Gadget = "pc" }), []string{"gadget"}},
		{"model snap without id", model(func(m *assertion.Model) { m.Snaps[0].ID = "" }), []string{`"pc"`, "id"}},
		{"model bad grade", model(func(m *assertion.Model) { m.Grade = "insecure" }), []string{"grade"}},
		{"model without kernel snap", model(func(m *assertion.Model) { m.Snaps = m.Snaps[:1] }), []string{"snapd would refuse", "kernel"}},
		{"model grade without snaps", model(func(m *assertion.Model) { m.Snaps, m.Grade = nil, "signed"; m.Gadget, m.Kernel = "pc", "pc-kernel" }), []string{"grade"}},
		{"model extra overrides a field", model(func(m *assertion.Model) { m.Extra = map[string]any{"base": "core24"} }), []string{`"base"`}},
		{"raw model for another brand", func() (assertion.Signed, error) {
			return s.Model(brandID, map[string]any{"brand-id": "other"}, nil)
		}, []string{"brand-id"}},

		{"system-user bad email", su(func(u *assertion.SystemUser) { u.Email = "not an address" }), []string{"email"}},
		{"system-user bad username", su(func(u *assertion.SystemUser) { u.Username = "Root!" }), []string{"username"}},
		{"system-user serials with two models", su(func(u *assertion.SystemUser) { u.Serials, u.Models = []string{"s"}, []string{"a", "b"} }), []string{"serials", "one model"}},
		{"system-user no credentials", su(func(u *assertion.SystemUser) { u.Password = "" }), []string{"password or ssh-keys"}},
		{"system-user password and hash", su(func(u *assertion.SystemUser) { u.PasswordHash = "$6$x$y" }), []string{"PasswordHash"}},
		{"system-user low rounds", su(func(u *assertion.SystemUser) { u.PasswordRounds = 1000 }), []string{"rounds 1000"}},
		{"system-user NUL in password", su(func(u *assertion.SystemUser) { u.Password = "a\x00b" }), []string{"NUL"}},
		{"system-user md5 hash", su(func(u *assertion.SystemUser) { u.Password, u.PasswordHash = "", "$1$salt$hash" }), []string{"SHA-512 crypt"}},
		{"system-user until before since", su(func(u *assertion.SystemUser) { u.Until = u.Since.Add(-time.Hour) }), []string{"until"}},
		{"system-user brand-wide for two years", su(func(u *assertion.SystemUser) { u.Models = nil; u.Until = u.Since.AddDate(2, 0, 0) }), []string{"at most a year"}},

		{"preseed bad label", preseed(func(p *assertion.Preseed) { p.SystemLabel = "Bad Label" }), []string{"system-label"}},
		{"preseed id without revision", preseed(func(p *assertion.Preseed) { p.Snaps[0].Revision = 0 }), []string{`"pc"`, "together"}},
		{"preseed no snaps", preseed(func(p *assertion.Preseed) { p.Snaps = nil }), []string{"at least one snap"}},
		{"preseed bad digest", preseed(func(p *assertion.Preseed) { p.ArtifactSHA3384 = "abc" }), []string{"artifact-sha3-384"}},
		{"preseed snap twice", preseed(func(p *assertion.Preseed) { p.Snaps = append(p.Snaps, p.Snaps[0]) }), []string{"twice"}},

		{"account-key-request bad name", func() (assertion.Signed, error) {
			return s.AccountKeyRequest(brandID, "Bad Name", fixed, nil)
		}, []string{"key name"}},
		{"account-key-request until before since", func() (assertion.Signed, error) {
			u := fixed.Add(-time.Hour)
			return s.AccountKeyRequest(brandID, "k", fixed, &u)
		}, []string{"until"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.sign()
			mustBeInvalid(t, err, c.want...)
		})
	}
	if n := tok.signs.Load(); n != 0 {
		t.Fatalf("invalid input reached the key %d times", n)
	}
}

func TestKeys(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var typedNil *rsa.PrivateKey
	for name, c := range map[string]func() error{
		"RSA-2048 by default": func() error { _, err := assertion.NewSigner(&tokenKey{priv: small}); return err },
		"ECDSA":               func() error { _, err := assertion.NewSigner(ec); return err },
		"minimum below 1024": func() error {
			_, err := assertion.NewSigner(&tokenKey{priv: small}, assertion.WithMinKeyBits(512))
			return err
		},
		"typed nil RSA key": func() error { _, err := assertion.NewSigner(typedNil); return err },
		"nil key":           func() error { _, err := assertion.NewSigner(nil); return err },
		"4096 with an 8192 floor": func() error {
			_, err := assertion.NewSigner(brandToken(), assertion.WithMinKeyBits(8192))
			return err
		},
		"one-off Sign with RSA-2048": func() error {
			_, err := assertion.Sign(asserts.SerialType, nil, nil, &tokenKey{priv: small})
			return err
		},
	} {
		if err := c(); !errors.Is(err, assertion.ErrUnsupportedKey) {
			t.Errorf("%s: %v, want ErrUnsupportedKey", name, err)
		}
	}
	if _, err := assertion.NewSigner(&tokenKey{priv: small}, assertion.WithMinKeyBits(2048)); err != nil {
		t.Errorf("RSA-2048 with a 2048 floor: %v", err)
	}

	id, err := assertion.KeyID(&brandPriv.PublicKey)
	if err != nil || id != asserts.RSAPrivateKey(brandPriv).PublicKey().ID() || id != brandSigner(t).KeyID() {
		t.Errorf("KeyID %s, %v", id, err)
	}
	enc, err := assertion.EncodePublicKey(&brandPriv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := asserts.DecodePublicKey(enc)
	if err != nil || dec.ID() != id {
		t.Errorf("EncodePublicKey does not decode to the key: %v", err)
	}
	for _, pub := range []*rsa.PublicKey{nil, {}, {N: brandPriv.N, E: 0}} {
		if _, err := assertion.KeyID(pub); !errors.Is(err, assertion.ErrUnsupportedKey) {
			t.Errorf("KeyID(%v): %v", pub, err)
		}
		if _, err := assertion.EncodePublicKey(pub); !errors.Is(err, assertion.ErrUnsupportedKey) {
			t.Errorf("EncodePublicKey(%v): %v", pub, err)
		}
	}
}

// TestFaultyToken: the self-check catches a token that signs with another
// key or returns garbage; a token error keeps its identity.
func TestFaultyToken(t *testing.T) {
	in := assertion.Serial{BrandID: brandID, Model: "foo-1", Serial: "S", DeviceKey: devicePub(), Timestamp: fixed}

	wrong, err := assertion.NewSigner(&tokenKey{priv: brandPriv, signWith: rootPriv})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wrong.Serial(in); !errors.Is(err, assertion.ErrSelfCheck) {
		t.Errorf("token signing with another key: %v, want ErrSelfCheck", err)
	}

	// A fault after the first signatures (which also passed snapd's full
	// check) is caught on every later signature.
	faulty, err := assertion.NewSigner(&tokenKey{priv: brandPriv, flipAfter: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 6; i++ {
		_, err := faulty.Serial(in)
		if i <= 3 && err != nil {
			t.Fatalf("signature %d of a good token: %v", i, err)
		}
		if i > 3 && !errors.Is(err, assertion.ErrSelfCheck) {
			t.Errorf("signature %d with a flipped bit: %v, want ErrSelfCheck", i, err)
		}
	}

	gone := errors.New("token removed")
	failing, err := assertion.NewSigner(&tokenKey{priv: brandPriv, fail: gone})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := failing.Serial(in); !errors.Is(err, assertion.ErrSigning) || !errors.Is(err, gone) {
		t.Errorf("failing token: %v, want ErrSigning wrapping the token's error", err)
	}

	broken, err := assertion.NewSigner(&tokenKey{priv: brandPriv}, assertion.WithClock(func() time.Time { return time.Time{} }))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := broken.Serial(in); !errors.Is(err, assertion.ErrSigning) {
		t.Errorf("zero clock: %v, want ErrSigning", err)
	}
}

// TestRebind: a Signer rebound to another handle on the same key signs
// through that handle; a handle on another key is refused.
func TestRebind(t *testing.T) {
	s := brandSigner(t)
	other := &tokenKey{priv: brandPriv}
	r, err := s.Rebind(other)
	if err != nil {
		t.Fatal(err)
	}
	in := assertion.Serial{BrandID: brandID, Model: "foo-1", Serial: "S", DeviceKey: devicePub(), Timestamp: fixed}
	sg, err := r.Serial(in)
	if err != nil {
		t.Fatal(err)
	}
	if other.signs.Load() != 1 {
		t.Errorf("the rebound handle signed %d times, want 1", other.signs.Load())
	}
	if err := asserts.SignatureCheck(sg.Assertion, asserts.RSAPublicKey(&brandPriv.PublicKey)); err != nil {
		t.Error(err)
	}
	if r.KeyID() != s.KeyID() {
		t.Errorf("key id %s, want %s", r.KeyID(), s.KeyID())
	}
	if _, err := s.Rebind(&tokenKey{priv: rootPriv}); !errors.Is(err, assertion.ErrUnsupportedKey) {
		t.Errorf("rebinding to another key: %v, want ErrUnsupportedKey", err)
	}
	if _, err := s.Rebind(nil); !errors.Is(err, assertion.ErrUnsupportedKey) {
		t.Errorf("rebinding to nil: %v", err)
	}
}
