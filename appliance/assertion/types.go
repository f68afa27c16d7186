package assertion

import (
	"encoding/base64"
	"fmt"
	"net/mail"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/snapcore/snapd/asserts"
)

// The syntax snapd's decoders require, checked here first so that the
// error names the field in this package's terms.
var (
	validAccountID   = regexp.MustCompile(`^(?:[a-zA-Z0-9]{32}|[-a-z0-9]{2,28})$`)
	validModelName   = regexp.MustCompile(`^[a-z0-9](?:-?[a-z0-9])*$`)
	validKeyName     = regexp.MustCompile(`^(?:[a-z0-9]+-?)*[a-z](?:-?[a-z0-9])*$`)
	validUsername    = regexp.MustCompile(`^[a-z0-9][-a-z0-9._]*$`)
	validSystemLabel = regexp.MustCompile(`^[a-z0-9](?:-?[a-z0-9])*$`)
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidHeaders}, args...)...)
}

func checkAccountID(field, id string) error {
	if !validAccountID.MatchString(id) {
		return invalid("%s %q is not an account id", field, id)
	}
	return nil
}

func checkModelName(field, name string) error {
	if !validModelName.MatchString(name) {
		return invalid("%s %q is not a model name (lowercase letters, digits, single dashes)", field, name)
	}
	return nil
}

func checkTime(field string, t time.Time) error {
	if t.IsZero() {
		return invalid("%s is not set", field)
	}
	if y := t.UTC().Year(); y < 1 || y > 9999 {
		return invalid("%s %v cannot be written as RFC 3339", field, t)
	}
	return nil
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func revisionHeader(h map[string]any, rev int) error {
	if rev < 0 {
		return invalid("revision %d is negative", rev)
	}
	if rev > 0 {
		h["revision"] = strconv.Itoa(rev)
	}
	return nil
}

// authority checks brand-id and returns the authority-id: the brand
// unless the model delegates (serial-authority, system-user-authority,
// preseed-authority).
func authority(brandID, authorityID string) (string, error) {
	if err := checkAccountID("brand-id", brandID); err != nil {
		return "", err
	}
	if authorityID == "" {
		return brandID, nil
	}
	return authorityID, checkAccountID("authority-id", authorityID)
}

// Serial is a device's serial assertion.
type Serial struct {
	BrandID string
	// AuthorityID is the signer's account; empty means BrandID. Another
	// account is only accepted by devices whose model names it in
	// serial-authority.
	AuthorityID string
	Model       string
	Serial      string
	// DeviceKey is the device's public key, usually
	// SerialRequest.DeviceKey().
	DeviceKey asserts.PublicKey
	// DeviceKeyEncoded is the device-key header text, for callers that
	// stored it; used when DeviceKey is nil and must match it otherwise.
	DeviceKeyEncoded string
	// DeviceKeySHA3384, when set, must be the device key's id.
	DeviceKeySHA3384 string
	Timestamp        time.Time
	Revision         int
	// Body is copied from the serial-request (hardware details).
	Body []byte
}

func (in Serial) headers() (map[string]any, error) {
	auth, err := authority(in.BrandID, in.AuthorityID)
	if err != nil {
		return nil, err
	}
	if err := checkModelName("model", in.Model); err != nil {
		return nil, err
	}
	if in.Serial == "" || strings.ContainsAny(in.Serial, "/\n\r") {
		return nil, invalid("serial %q must be non-empty, one line and without '/'", in.Serial)
	}
	key := in.DeviceKey
	if in.DeviceKeyEncoded != "" {
		dec, err := asserts.DecodePublicKey([]byte(in.DeviceKeyEncoded))
		if err != nil {
			return nil, invalid("device-key: %v", err)
		}
		if key != nil && key.ID() != dec.ID() {
			return nil, invalid("device-key: DeviceKey and DeviceKeyEncoded are different keys")
		}
		key = dec
	}
	if key == nil {
		return nil, invalid("device-key is not set")
	}
	enc, err := asserts.EncodePublicKey(key)
	if err != nil {
		return nil, invalid("device-key: %v", err)
	}
	if in.DeviceKeySHA3384 != "" && in.DeviceKeySHA3384 != key.ID() {
		return nil, invalid("device-key-sha3-384 %q is not the id of the device key (%s)", in.DeviceKeySHA3384, key.ID())
	}
	if err := checkTime("timestamp", in.Timestamp); err != nil {
		return nil, err
	}
	h := map[string]any{
		"authority-id":        auth,
		"brand-id":            in.BrandID,
		"model":               in.Model,
		"serial":              in.Serial,
		"device-key":          string(enc),
		"device-key-sha3-384": key.ID(),
		"timestamp":           rfc3339(in.Timestamp),
	}
	return h, revisionHeader(h, in.Revision)
}

// Serial signs a serial assertion.
func (s *Signer) Serial(in Serial) (Signed, error) {
	h, err := in.headers()
	if err != nil {
		return Signed{}, err
	}
	return s.Sign(asserts.SerialType, h, in.Body)
}

// Model signs a model assertion from raw headers, as an API client sends
// them (core18 style, or core20+ with grade and snaps). authority-id and
// brand-id are brandID; series defaults to 16; snapd's decoder, run before
// signing, validates the rest. SignModel takes a typed description.
func (s *Signer) Model(brandID string, headers map[string]any, body []byte) (Signed, error) {
	if err := checkAccountID("brand-id", brandID); err != nil {
		return Signed{}, err
	}
	h := make(map[string]any, len(headers)+3)
	for k, v := range headers {
		h[k] = v
	}
	for _, k := range []string{"authority-id", "brand-id"} {
		if v, ok := h[k]; ok {
			if str, isStr := v.(string); !isStr || str != brandID {
				return Signed{}, invalid("%s %v is not the brand %q", k, v, brandID)
			}
		}
		h[k] = brandID
	}
	if _, ok := h["series"]; !ok {
		h["series"] = "16"
	}
	return s.Sign(asserts.ModelType, h, body)
}

// Model describes a model assertion. Set Gadget, Kernel (and optionally
// Base, RequiredSnaps) for a core16/18 model; set Grade and Snaps (which
// list gadget, kernel, base and the rest) for core20 and later.
type Model struct {
	BrandID      string
	Model        string
	Series       string // "16" when empty
	Architecture string
	DisplayName  string
	Store        string
	Base         string
	Timestamp    time.Time
	Revision     int

	// Core16/18 style.
	Gadget        string // name, or name=track
	Kernel        string // name, or name=track
	RequiredSnaps []string

	// Core20+ style.
	Grade         string // secured, signed (default) or dangerous
	StorageSafety string
	Snaps         []ModelSnap

	Classic      bool
	Distribution string // classic core20+ models only

	SerialAuthority     []string
	SystemUserAuthority []string // ["*"] means any account
	PreseedAuthority    []string

	// Extra holds headers without a field here (validation-sets, ...).
	Extra map[string]any
	Body  []byte
}

// ModelSnap is one entry of a core20+ model's snaps header.
type ModelSnap struct {
	Name           string
	ID             string // required unless the grade is dangerous
	Type           string // app (default), base, gadget, kernel, core, snapd
	DefaultChannel string // default latest/stable
	Presence       string // required (default) or optional; not for essential snaps
	Modes          []string
	Classic        bool
	// Extra holds entry keys without a field here (components, ...).
	Extra map[string]any
}

var (
	modelGrades    = []string{"secured", "signed", "dangerous"}
	modelSnapTypes = []string{"app", "base", "gadget", "kernel", "core", "snapd"}
)

func oneOf(v string, allowed []string) bool {
	for _, a := range allowed {
		if v == a {
			return true
		}
	}
	return false
}

func (in Model) headers() (map[string]any, error) {
	if err := checkAccountID("brand-id", in.BrandID); err != nil {
		return nil, err
	}
	if err := checkModelName("model", in.Model); err != nil {
		return nil, err
	}
	if err := checkTime("timestamp", in.Timestamp); err != nil {
		return nil, err
	}
	if in.Architecture == "" && !in.Classic {
		return nil, invalid("architecture is required")
	}
	series := in.Series
	if series == "" {
		series = "16"
	}
	h := map[string]any{
		"authority-id": in.BrandID,
		"brand-id":     in.BrandID,
		"series":       series,
		"model":        in.Model,
		"timestamp":    rfc3339(in.Timestamp),
	}
	set := func(name, v string) {
		if v != "" {
			h[name] = v
		}
	}
	set("architecture", in.Architecture)
	set("display-name", in.DisplayName)
	set("store", in.Store)
	set("base", in.Base)
	set("distribution", in.Distribution)
	if in.Classic {
		h["classic"] = "true"
	}

	if len(in.Snaps) > 0 {
		if in.Gadget != "" || in.Kernel != "" || len(in.RequiredSnaps) > 0 {
			return nil, invalid("gadget, kernel and required-snaps go into snaps entries in a model with snaps")
		}
		if in.Base == "" {
			return nil, invalid("base is required in a model with snaps")
		}
		if in.Grade != "" && !oneOf(in.Grade, modelGrades) {
			return nil, invalid("grade %q is not one of %s", in.Grade, strings.Join(modelGrades, ", "))
		}
		set("grade", in.Grade)
		set("storage-safety", in.StorageSafety)
		snaps := make([]any, len(in.Snaps))
		for i, sn := range in.Snaps {
			m, err := sn.entry(in.Grade == "dangerous")
			if err != nil {
				return nil, err
			}
			snaps[i] = m
		}
		h["snaps"] = snaps
	} else {
		if in.Grade != "" || in.StorageSafety != "" {
			return nil, invalid("grade and storage-safety need a model with snaps (core20 and later)")
		}
		if !in.Classic && (in.Gadget == "" || in.Kernel == "") {
			return nil, invalid("gadget and kernel are required in a model without snaps")
		}
		set("gadget", in.Gadget)
		set("kernel", in.Kernel)
		if len(in.RequiredSnaps) > 0 {
			h["required-snaps"] = in.RequiredSnaps
		}
	}
	for name, ids := range map[string][]string{
		"serial-authority":      in.SerialAuthority,
		"system-user-authority": in.SystemUserAuthority,
		"preseed-authority":     in.PreseedAuthority,
	} {
		switch {
		case len(ids) == 0:
		case name == "system-user-authority" && len(ids) == 1 && ids[0] == "*":
			h[name] = "*"
		default:
			for _, id := range ids {
				if err := checkAccountID(name, id); err != nil {
					return nil, err
				}
			}
			h[name] = ids
		}
	}
	for k, v := range in.Extra {
		if _, ok := h[k]; ok {
			return nil, invalid("extra header %q is set by a Model field", k)
		}
		h[k] = v
	}
	return h, revisionHeader(h, in.Revision)
}

func (sn ModelSnap) entry(dangerous bool) (map[string]any, error) {
	if sn.Name == "" {
		return nil, invalid("a snaps entry has no name")
	}
	if sn.ID == "" && !dangerous {
		return nil, invalid("snaps entry %q needs an id unless the grade is dangerous", sn.Name)
	}
	if sn.Type != "" && !oneOf(sn.Type, modelSnapTypes) {
		return nil, invalid("snaps entry %q has type %q, not one of %s", sn.Name, sn.Type, strings.Join(modelSnapTypes, ", "))
	}
	if sn.Presence != "" && sn.Presence != "required" && sn.Presence != "optional" {
		return nil, invalid("snaps entry %q has presence %q, not required or optional", sn.Name, sn.Presence)
	}
	m := map[string]any{"name": sn.Name}
	for k, v := range map[string]string{"id": sn.ID, "type": sn.Type, "default-channel": sn.DefaultChannel, "presence": sn.Presence} {
		if v != "" {
			m[k] = v
		}
	}
	if len(sn.Modes) > 0 {
		m["modes"] = sn.Modes
	}
	if sn.Classic {
		m["classic"] = "true"
	}
	for k, v := range sn.Extra {
		if _, ok := m[k]; ok {
			return nil, invalid("snaps entry %q: extra key %q is set by a ModelSnap field", sn.Name, k)
		}
		m[k] = v
	}
	return m, nil
}

// SignModel signs the model assertion in describes.
func (s *Signer) SignModel(in Model) (Signed, error) {
	h, err := in.headers()
	if err != nil {
		return Signed{}, err
	}
	return s.Sign(asserts.ModelType, h, in.Body)
}

// SystemUser is a system-user assertion. Give Password (hashed here with
// SHA-512 crypt and not kept), or PasswordHash (already "$6$..."), or
// SSHKeys, or a password and keys.
type SystemUser struct {
	BrandID string
	// AuthorityID is the signer's account; empty means BrandID.
	AuthorityID string
	Email       string
	Username    string
	Name        string
	// Models the user is for; none means every model of the brand,
	// which snapd allows for at most a year.
	Models []string
	// Serials restricts the user to these devices (one model only);
	// this makes the assertion format 1 (snapd 2.28+).
	Serials []string
	// Password is the plaintext; PasswordRounds is the SHA-512 crypt
	// rounds (0: the default 5000, written without a rounds= field).
	Password       string
	PasswordRounds int
	PasswordHash   string
	// ForcePasswordChange makes the user change the password on first
	// login.
	ForcePasswordChange bool
	SSHKeys             []string
	Since               time.Time
	Until               time.Time
	Revision            int
}

func (in SystemUser) headers() (map[string]any, error) {
	auth, err := authority(in.BrandID, in.AuthorityID)
	if err != nil {
		return nil, err
	}
	if _, err := mail.ParseAddress(in.Email); err != nil || strings.ContainsAny(in.Email, "/\n") {
		return nil, invalid("email %q is not an email address", in.Email)
	}
	if !validUsername.MatchString(in.Username) {
		return nil, invalid("username %q (lowercase letters, digits, '-', '.', '_', not starting with a punctuation mark)", in.Username)
	}
	if strings.Contains(in.Name, "\n") {
		return nil, invalid("name must be one line")
	}
	for _, m := range in.Models {
		if err := checkModelName("models entry", m); err != nil {
			return nil, err
		}
	}
	if len(in.Serials) > 0 && len(in.Models) != 1 {
		return nil, invalid("serials need exactly one model, not %d", len(in.Models))
	}
	for _, sn := range in.Serials {
		if sn == "" || strings.ContainsAny(sn, "\n\r") {
			return nil, invalid("serials entry %q", sn)
		}
	}
	if in.Password != "" && in.PasswordHash != "" {
		return nil, invalid("give Password or PasswordHash, not both")
	}
	if in.Password == "" && in.PasswordHash == "" && len(in.SSHKeys) == 0 {
		return nil, invalid("a system user needs a password or ssh-keys")
	}
	if in.ForcePasswordChange && in.Password == "" && in.PasswordHash == "" {
		return nil, invalid("force-password-change needs a password")
	}
	for i, k := range in.SSHKeys {
		if strings.TrimSpace(k) == "" || strings.ContainsAny(k, "\n\r") {
			return nil, invalid("ssh-keys entry %d must be one non-empty line", i)
		}
	}
	if err := checkTime("since", in.Since); err != nil {
		return nil, err
	}
	if err := checkTime("until", in.Until); err != nil {
		return nil, err
	}
	if !in.Until.After(in.Since) {
		return nil, invalid("until %s is not after since %s", rfc3339(in.Until), rfc3339(in.Since))
	}
	if len(in.Models) == 0 && in.Until.After(in.Since.AddDate(1, 0, 0)) {
		return nil, invalid("a system user for every model of the brand (no models) may be valid for at most a year")
	}
	h := map[string]any{
		"authority-id": auth,
		"brand-id":     in.BrandID,
		"email":        in.Email,
		"username":     in.Username,
		"since":        rfc3339(in.Since),
		"until":        rfc3339(in.Until),
	}
	if in.Name != "" {
		h["name"] = in.Name
	}
	if len(in.Models) > 0 {
		h["models"] = in.Models
	}
	if len(in.Serials) > 0 {
		h["serials"] = in.Serials
	}
	if len(in.SSHKeys) > 0 {
		h["ssh-keys"] = in.SSHKeys
	}
	switch {
	case in.Password != "":
		if strings.ContainsRune(in.Password, 0) {
			// crypt(3) stops at NUL: the user could never log in
			// with what they were told.
			return nil, invalid("password contains a NUL character")
		}
		if r := in.PasswordRounds; r != 0 && (r < 5000 || r > maxRounds) {
			return nil, invalid("password rounds %d: snapd accepts 5000 to %d", r, maxRounds)
		}
		hashed, err := SHA512Crypt(in.Password, "", in.PasswordRounds)
		if err != nil {
			return nil, err
		}
		h["password"] = hashed
	case in.PasswordHash != "":
		if err := checkPasswordHash(in.PasswordHash); err != nil {
			return nil, err
		}
		h["password"] = in.PasswordHash
	}
	if in.ForcePasswordChange {
		h["force-password-change"] = "true"
	}
	return h, revisionHeader(h, in.Revision)
}

// SystemUser signs a system-user assertion.
func (s *Signer) SystemUser(in SystemUser) (Signed, error) {
	h, err := in.headers()
	if err != nil {
		return Signed{}, err
	}
	return s.Sign(asserts.SystemUserType, h, nil)
}

// PreseedSnap is one entry of a preseed assertion's snaps list. ID and
// Revision go together; a snap without them is unasserted.
type PreseedSnap struct {
	Name     string
	ID       string
	Revision int
}

// Preseed is a preseed assertion.
type Preseed struct {
	BrandID string
	// AuthorityID is the signer's account; empty means BrandID.
	AuthorityID     string
	Model           string
	SystemLabel     string
	Series          string // "16" when empty
	Snaps           []PreseedSnap
	ArtifactSHA3384 string // base64url SHA3-384 of the preseed artifact
	Timestamp       time.Time
	Revision        int
}

func (in Preseed) headers() (map[string]any, error) {
	auth, err := authority(in.BrandID, in.AuthorityID)
	if err != nil {
		return nil, err
	}
	if err := checkModelName("model", in.Model); err != nil {
		return nil, err
	}
	if !validSystemLabel.MatchString(in.SystemLabel) {
		return nil, invalid("system-label %q (lowercase letters, digits, single dashes)", in.SystemLabel)
	}
	if d, err := base64.RawURLEncoding.DecodeString(in.ArtifactSHA3384); err != nil || len(d) != 48 {
		return nil, invalid("artifact-sha3-384 %q is not a base64url (unpadded) SHA3-384 digest", in.ArtifactSHA3384)
	}
	if err := checkTime("timestamp", in.Timestamp); err != nil {
		return nil, err
	}
	if len(in.Snaps) == 0 {
		return nil, invalid("a preseed assertion lists at least one snap")
	}
	series := in.Series
	if series == "" {
		series = "16"
	}
	seen := make(map[string]bool, len(in.Snaps))
	snaps := make([]any, 0, len(in.Snaps))
	for _, sn := range in.Snaps {
		if sn.Name == "" {
			return nil, invalid("a preseed snaps entry has no name")
		}
		if seen[sn.Name] {
			return nil, invalid("snap %q is listed twice", sn.Name)
		}
		seen[sn.Name] = true
		if sn.Revision < 0 {
			return nil, invalid("snap %q: revision %d is negative", sn.Name, sn.Revision)
		}
		if (sn.ID == "") != (sn.Revision == 0) {
			return nil, invalid("snap %q: id and revision go together", sn.Name)
		}
		m := map[string]any{"name": sn.Name}
		if sn.ID != "" {
			m["id"] = sn.ID
			m["revision"] = strconv.Itoa(sn.Revision)
		}
		snaps = append(snaps, m)
	}
	h := map[string]any{
		"authority-id":      auth,
		"brand-id":          in.BrandID,
		"series":            series,
		"model":             in.Model,
		"system-label":      in.SystemLabel,
		"snaps":             snaps,
		"artifact-sha3-384": in.ArtifactSHA3384,
		"timestamp":         rfc3339(in.Timestamp),
	}
	return h, revisionHeader(h, in.Revision)
}

// Preseed signs a preseed assertion.
func (s *Signer) Preseed(in Preseed) (Signed, error) {
	h, err := in.headers()
	if err != nil {
		return Signed{}, err
	}
	return s.Sign(asserts.PreseedType, h, nil)
}

// AccountKeyRequest makes the account-key-request registering this
// signer's key as name for accountID: self-signed by the key itself, with
// the public key as body. It is what `snap export-key --account=ID NAME`
// prints and what a Brand Store registration takes. until nil means no
// end.
func (s *Signer) AccountKeyRequest(accountID, name string, since time.Time, until *time.Time) (Signed, error) {
	if err := checkAccountID("account-id", accountID); err != nil {
		return Signed{}, err
	}
	if !validKeyName.MatchString(name) {
		return Signed{}, invalid("key name %q (lowercase letters, digits and dashes, with a letter)", name)
	}
	if err := checkTime("since", since); err != nil {
		return Signed{}, err
	}
	body, err := EncodePublicKey(s.pub)
	if err != nil {
		return Signed{}, err
	}
	h := map[string]any{
		"account-id":          accountID,
		"name":                name,
		"public-key-sha3-384": s.keyID,
		"since":               rfc3339(since),
	}
	if until != nil {
		if err := checkTime("until", *until); err != nil {
			return Signed{}, err
		}
		if !until.After(since) {
			return Signed{}, invalid("until %s is not after since %s", rfc3339(*until), rfc3339(since))
		}
		h["until"] = rfc3339(*until)
	}
	return s.Sign(asserts.AccountKeyRequestType, h, body)
}
