// Package assertion makes snap assertions signed by keys that never leave
// the token, byte-compatible with snapd's own signing.
//
// snapd's asserts package signs only with its own PrivateKey type, whose
// methods are unexported, so a key inside a PKCS#11 token cannot be plugged
// into it. This package therefore assembles the content itself, in
// snapd's canonical order and encoding, and makes the OpenPGP v4 signature
// packet through a crypto.Signer (golang.org/x/crypto/openpgp/packet), so
// the only private-key operation is the token's RSA signature. Tests prove
// byte identity with snapd's signing for the same headers and key.
//
// Every result is decoded with asserts.Decode and its signature verified
// with the public key before it is returned: a cheap self-check that an
// encoding drift or a faulty token shows up here, not on a device.
package assertion

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/snapcore/snapd/asserts"
	"golang.org/x/crypto/openpgp/packet"
)

// Errors callers map to answers.
var (
	ErrInvalidHeaders = errors.New("invalid assertion headers")
	ErrUnsupportedKey = errors.New("unsupported signing key")
	ErrSelfCheck      = errors.New("signed assertion failed its self-check")
)

// MinKeyBits is the smallest signing key accepted: snap signing keys are
// RSA-4096 (snapd's external key manager refuses smaller ones).
const MinKeyBits = 4096

// keyTimestamp is the creation time snapd gives every public-key packet it
// derives ids from (v1FixedTimestamp).
var keyTimestamp = time.Date(2016, time.January, 1, 0, 0, 0, 0, time.UTC)

// Signer signs assertions with one RSA key.
type Signer struct {
	key   crypto.Signer
	pub   *rsa.PublicKey
	keyID string
	// Now is the clock for signature creation times (tests fix it).
	Now func() time.Time
}

// NewSigner wraps key. The key's Sign is the only private operation used;
// for a token key pass one bound to the request's context.
func NewSigner(key crypto.Signer) (*Signer, error) {
	pub, ok := key.Public().(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: %T is not an RSA key", ErrUnsupportedKey, key.Public())
	}
	if pub.N.BitLen() < MinKeyBits {
		return nil, fmt.Errorf("%w: RSA-%d, at least %d bits needed", ErrUnsupportedKey, pub.N.BitLen(), MinKeyBits)
	}
	return &Signer{key: key, pub: pub, keyID: KeyID(pub), Now: time.Now}, nil
}

// KeyID returns the key's sign-key-sha3-384.
func (s *Signer) KeyID() string { return s.keyID }

// PublicKey returns the signing key's public half.
func (s *Signer) PublicKey() *rsa.PublicKey { return s.pub }

// KeyID is the sign-key-sha3-384 / public-key-sha3-384 of pub, as snapd
// computes it.
func KeyID(pub *rsa.PublicKey) string { return asserts.RSAPublicKey(pub).ID() }

// EncodePublicKey is pub in account-key body encoding.
func EncodePublicKey(pub *rsa.PublicKey) ([]byte, error) {
	return asserts.EncodePublicKey(asserts.RSAPublicKey(pub))
}

// Signed is a signed assertion: its encoding and its decoded form.
type Signed struct {
	Bytes     []byte
	Assertion asserts.Assertion
}

// Sign assembles an assertion of type t from headers and body, signs it
// and self-checks it. It sets type, sign-key-sha3-384 and body-length, and
// format when the headers do not (asserts.SuggestFormat). Header values are
// strings, []interface{} and map[string]interface{}, as in snapd.
func (s *Signer) Sign(t *asserts.AssertionType, headers map[string]any, body []byte) (Signed, error) {
	content, err := s.content(t, headers, body)
	if err != nil {
		return Signed{}, err
	}
	sig, err := s.signature(content)
	if err != nil {
		return Signed{}, err
	}
	out := make([]byte, 0, len(content)+2+len(sig)+1)
	out = append(append(append(out, content...), "\n\n"...), sig...)
	out = append(out, '\n')
	a, err := asserts.Decode(out)
	if err != nil {
		return Signed{}, fmt.Errorf("%w: %v", ErrSelfCheck, err)
	}
	if a.Type() != t {
		return Signed{}, fmt.Errorf("%w: decoded as %s", ErrSelfCheck, a.Type().Name)
	}
	if err := asserts.SignatureCheck(a, asserts.RSAPublicKey(s.pub)); err != nil {
		return Signed{}, fmt.Errorf("%w: %v", ErrSelfCheck, err)
	}
	return Signed{Bytes: out, Assertion: a}, nil
}

// content builds the signed part in snapd's canonical form.
func (s *Signer) content(t *asserts.AssertionType, in map[string]any, body []byte) ([]byte, error) {
	if t == nil {
		return nil, fmt.Errorf("%w: no assertion type", ErrInvalidHeaders)
	}
	if !utf8.Valid(body) {
		return nil, fmt.Errorf("%w: body is not UTF-8", ErrInvalidHeaders)
	}
	h := make(map[string]any, len(in)+3)
	for k, v := range in {
		if err := checkValue(k, v); err != nil {
			return nil, err
		}
		h[k] = v
	}
	for _, k := range []string{"type", "sign-key-sha3-384", "body-length"} {
		if _, ok := h[k]; ok {
			return nil, fmt.Errorf("%w: %q is set by the signer", ErrInvalidHeaders, k)
		}
	}
	h["type"] = t.Name
	h["sign-key-sha3-384"] = s.keyID
	if len(body) > 0 {
		h["body-length"] = strconv.Itoa(len(body))
	}
	format := 0
	if f, ok := h["format"]; ok {
		fs, _ := f.(string)
		n, err := strconv.Atoi(fs)
		if err != nil || n < 0 || strconv.Itoa(n) != fs {
			return nil, fmt.Errorf("%w: format %v", ErrInvalidHeaders, f)
		}
		format = n
	} else {
		n, err := asserts.SuggestFormat(t, h, body)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidHeaders, err)
		}
		format = n
		if n > 0 {
			h["format"] = strconv.Itoa(n)
		}
	}
	if format == 0 {
		delete(h, "format")
	}
	if r, ok := h["revision"]; ok {
		rs, _ := r.(string)
		n, err := strconv.Atoi(rs)
		if err != nil || n < 0 || strconv.Itoa(n) != rs {
			return nil, fmt.Errorf("%w: revision %v", ErrInvalidHeaders, r)
		}
		if n == 0 {
			delete(h, "revision")
		}
	}

	var buf bytes.Buffer
	buf.WriteString("type: ")
	buf.WriteString(t.Name)
	written := map[string]bool{"type": true, "body-length": true, "sign-key-sha3-384": true}
	for _, k := range []string{"format", "authority-id", "revision"} {
		if v, ok := h[k]; ok {
			writeEntry(&buf, k+":", v, 0)
		}
		written[k] = true
	}
	for _, pk := range t.PrimaryKey {
		v, ok := h[pk]
		defl := t.OptionalPrimaryKeyDefaults[pk]
		if !ok && defl == "" {
			return nil, fmt.Errorf("%w: primary key %q is missing", ErrInvalidHeaders, pk)
		}
		if ok {
			vs, isStr := v.(string)
			if !isStr || vs == "" {
				return nil, fmt.Errorf("%w: primary key %q must be a non-empty string", ErrInvalidHeaders, pk)
			}
			if strings.Contains(vs, "/") {
				return nil, fmt.Errorf("%w: primary key %q cannot contain '/'", ErrInvalidHeaders, pk)
			}
			// snapd leaves out an optional primary key equal to its
			// default.
			if vs != defl {
				writeEntry(&buf, pk+":", v, 0)
			}
		}
		written[pk] = true
	}
	var others []string
	for k := range h {
		if !written[k] {
			others = append(others, k)
		}
	}
	sort.Strings(others)
	for _, k := range others {
		writeEntry(&buf, k+":", h[k], 0)
	}
	if len(body) > 0 {
		writeEntry(&buf, "body-length:", h["body-length"], 0)
	}
	writeEntry(&buf, "sign-key-sha3-384:", s.keyID, 0)
	if len(body) > 0 {
		buf.WriteString("\n\n")
		buf.Write(body)
	}
	return buf.Bytes(), nil
}

// checkValue refuses header values snapd cannot encode.
func checkValue(name string, v any) error {
	if name == "" || strings.ContainsAny(name, ": \n") {
		return fmt.Errorf("%w: header name %q", ErrInvalidHeaders, name)
	}
	var walk func(path string, v any) error
	walk = func(path string, v any) error {
		switch x := v.(type) {
		case string:
			if !utf8.ValidString(x) {
				return fmt.Errorf("%w: %s is not UTF-8", ErrInvalidHeaders, path)
			}
		case []any:
			for i, el := range x {
				if err := walk(fmt.Sprintf("%s/%d", path, i), el); err != nil {
					return err
				}
			}
		case map[string]any:
			for k, el := range x {
				if k == "" || strings.ContainsAny(k, ": \n") {
					return fmt.Errorf("%w: map key %q in %s", ErrInvalidHeaders, k, path)
				}
				if err := walk(path+"/"+k, el); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("%w: %s is a %T; header values are strings, lists and maps", ErrInvalidHeaders, path, v)
		}
		return nil
	}
	return walk(name, v)
}

// writeEntry encodes one header entry the way snapd does: multi-line
// strings indented by 4 spaces, list items "  -", map keys sorted and
// indented by 2; empty lists and maps are left out.
func writeEntry(buf *bytes.Buffer, intro string, v any, indent int) {
	switch x := v.(type) {
	case string:
		buf.WriteByte('\n')
		buf.WriteString(intro)
		if strings.ContainsRune(x, '\n') {
			pfx := strings.Repeat(" ", indent) + "    "
			buf.WriteByte('\n')
			buf.WriteString(pfx)
			buf.WriteString(strings.ReplaceAll(x, "\n", "\n"+pfx))
		} else {
			buf.WriteByte(' ')
			buf.WriteString(x)
		}
	case []any:
		if len(x) == 0 {
			return
		}
		buf.WriteByte('\n')
		buf.WriteString(intro)
		pfx := strings.Repeat(" ", indent) + "  -"
		for _, el := range x {
			writeEntry(buf, pfx, el, indent+2)
		}
	case map[string]any:
		if len(x) == 0 {
			return
		}
		buf.WriteByte('\n')
		buf.WriteString(intro)
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		pfx := strings.Repeat(" ", indent) + "  "
		for _, k := range keys {
			writeEntry(buf, pfx+k+":", x[k], len(pfx))
		}
	}
}

// signature makes the OpenPGP v4 binary-document signature over content
// (SHA-512, creation time as the only hashed subpacket) and encodes it as
// snapd does: base64 of 0x01 || packet, in 76-column lines.
func (s *Signer) signature(content []byte) ([]byte, error) {
	pk := packet.NewSignerPrivateKey(keyTimestamp, s.key)
	sig := &packet.Signature{
		SigType:      packet.SigTypeBinary,
		PubKeyAlgo:   packet.PubKeyAlgoRSA,
		Hash:         crypto.SHA512,
		CreationTime: s.Now(),
	}
	h := sha512.New()
	h.Write(content)
	if err := sig.Sign(h, pk, &packet.Config{DefaultHash: crypto.SHA512}); err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	var pkt bytes.Buffer
	if err := sig.Serialize(&pkt); err != nil {
		return nil, err
	}
	flat := base64.StdEncoding.EncodeToString(append([]byte{1}, pkt.Bytes()...))
	var out bytes.Buffer
	for len(flat) > 76 {
		out.WriteString(flat[:76])
		out.WriteByte('\n')
		flat = flat[76:]
	}
	out.WriteString(flat)
	return out.Bytes(), nil
}
