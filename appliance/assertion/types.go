package assertion

import (
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/snapcore/snapd/asserts"
)

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func revision(r int) (string, error) {
	if r < 0 {
		return "", fmt.Errorf("%w: revision %d", ErrInvalidHeaders, r)
	}
	return strconv.Itoa(r), nil
}

// Serial is a device's serial assertion, signed by the brand.
type Serial struct {
	BrandID   string
	Model     string
	Serial    string
	DeviceKey asserts.PublicKey // from the device's serial-request
	Timestamp time.Time
	Revision  int
	Body      []byte // copied from the serial-request
}

// Serial signs a serial assertion.
func (s *Signer) Serial(in Serial) (Signed, error) {
	if in.DeviceKey == nil {
		return Signed{}, fmt.Errorf("%w: no device key", ErrInvalidHeaders)
	}
	enc, err := asserts.EncodePublicKey(in.DeviceKey)
	if err != nil {
		return Signed{}, fmt.Errorf("%w: device key: %v", ErrInvalidHeaders, err)
	}
	rev, err := revision(in.Revision)
	if err != nil {
		return Signed{}, err
	}
	return s.Sign(asserts.SerialType, map[string]any{
		"authority-id":        in.BrandID,
		"brand-id":            in.BrandID,
		"model":               in.Model,
		"serial":              in.Serial,
		"device-key":          string(enc),
		"device-key-sha3-384": in.DeviceKey.ID(),
		"timestamp":           ts(in.Timestamp),
		"revision":            rev,
	}, in.Body)
}

// Model signs a model assertion from its headers (core18 style, or core20+
// with grade and snaps). authority-id and brand-id must name the brand;
// snapd's decoder, run by the self-check, validates the rest.
func (s *Signer) Model(brandID string, headers map[string]any, body []byte) (Signed, error) {
	h := make(map[string]any, len(headers)+2)
	for k, v := range headers {
		h[k] = v
	}
	for _, k := range []string{"authority-id", "brand-id"} {
		if v, ok := h[k]; ok && v != brandID {
			return Signed{}, fmt.Errorf("%w: %s %v is not the brand %q", ErrInvalidHeaders, k, v, brandID)
		}
		h[k] = brandID
	}
	if _, ok := h["series"]; !ok {
		h["series"] = "16"
	}
	return s.Sign(asserts.ModelType, h, body)
}

// SystemUser is a system-user assertion. Password is the plaintext, hashed
// here (SHA-512 crypt) and never kept; or give SSHKeys.
type SystemUser struct {
	BrandID  string
	Email    string
	Username string
	Name     string
	Models   []string
	Serials  []string // needs format 1, which Sign sets
	Password string
	SSHKeys  []string
	Since    time.Time
	Until    time.Time
	Revision int
}

// SystemUser signs a system-user assertion.
func (s *Signer) SystemUser(in SystemUser) (Signed, error) {
	if in.Password == "" && len(in.SSHKeys) == 0 {
		return Signed{}, fmt.Errorf("%w: a system user needs a password or ssh keys", ErrInvalidHeaders)
	}
	if !in.Until.After(in.Since) {
		return Signed{}, fmt.Errorf("%w: until must be after since", ErrInvalidHeaders)
	}
	rev, err := revision(in.Revision)
	if err != nil {
		return Signed{}, err
	}
	h := map[string]any{
		"authority-id": in.BrandID,
		"brand-id":     in.BrandID,
		"email":        in.Email,
		"username":     in.Username,
		"name":         in.Name,
		"models":       anyList(in.Models),
		"since":        ts(in.Since),
		"until":        ts(in.Until),
		"revision":     rev,
	}
	if len(in.Serials) > 0 {
		h["serials"] = anyList(in.Serials)
	}
	if len(in.SSHKeys) > 0 {
		h["ssh-keys"] = anyList(in.SSHKeys)
	}
	if in.Password != "" {
		hashed, err := SHA512Crypt(in.Password, "", 0)
		if err != nil {
			return Signed{}, err
		}
		h["password"] = hashed
	}
	return s.Sign(asserts.SystemUserType, h, nil)
}

func anyList(l []string) []any {
	out := make([]any, len(l))
	for i, s := range l {
		out[i] = s
	}
	return out
}

// PreseedSnap is one entry of a preseed assertion's snaps list.
type PreseedSnap struct {
	Name     string
	ID       string
	Revision int
}

// Preseed is a preseed assertion.
type Preseed struct {
	BrandID         string
	Model           string
	SystemLabel     string
	Series          string // default "16"
	Snaps           []PreseedSnap
	ArtifactSHA3384 string
	Timestamp       time.Time
	Revision        int
}

var validSystemLabel = regexp.MustCompile(`^[a-z0-9](?:-?[a-z0-9])*$`)

// Preseed signs a preseed assertion.
func (s *Signer) Preseed(in Preseed) (Signed, error) {
	if !validSystemLabel.MatchString(in.SystemLabel) {
		return Signed{}, fmt.Errorf("%w: system-label %q", ErrInvalidHeaders, in.SystemLabel)
	}
	if in.Series == "" {
		in.Series = "16"
	}
	rev, err := revision(in.Revision)
	if err != nil {
		return Signed{}, err
	}
	snaps := make([]any, 0, len(in.Snaps))
	for _, sn := range in.Snaps {
		if sn.Name == "" {
			return Signed{}, fmt.Errorf("%w: a preseed snap needs a name", ErrInvalidHeaders)
		}
		m := map[string]any{"name": sn.Name}
		if (sn.ID == "") != (sn.Revision == 0) {
			return Signed{}, fmt.Errorf("%w: snap %q: id and revision go together", ErrInvalidHeaders, sn.Name)
		}
		if sn.ID != "" {
			m["id"] = sn.ID
			m["revision"] = strconv.Itoa(sn.Revision)
		}
		snaps = append(snaps, m)
	}
	return s.Sign(asserts.PreseedType, map[string]any{
		"authority-id":      in.BrandID,
		"brand-id":          in.BrandID,
		"series":            in.Series,
		"model":             in.Model,
		"system-label":      in.SystemLabel,
		"snaps":             snaps,
		"artifact-sha3-384": in.ArtifactSHA3384,
		"timestamp":         ts(in.Timestamp),
		"revision":          rev,
	}, nil)
}

// AccountKeyRequest makes the account-key-request that registers this
// signer's key for accountID under name: self-signed by the key itself,
// what `snap export-key --account=ACCOUNT NAME` prints and the Brand Store
// registration takes.
func (s *Signer) AccountKeyRequest(accountID, name string, since time.Time, until *time.Time) (Signed, error) {
	body, err := EncodePublicKey(s.pub)
	if err != nil {
		return Signed{}, err
	}
	h := map[string]any{
		"account-id":          accountID,
		"name":                name,
		"public-key-sha3-384": s.keyID,
		"since":               ts(since),
	}
	if until != nil {
		h["until"] = ts(*until)
	}
	return s.Sign(asserts.AccountKeyRequestType, h, body)
}
