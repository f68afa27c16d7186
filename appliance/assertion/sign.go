package assertion

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/snapcore/snapd/asserts"
	"golang.org/x/crypto/openpgp/packet"
)

// Errors callers map to answers. Every error this package returns wraps
// exactly one of them (ErrSigning also wraps the signer's own error, so a
// token's "unavailable" stays recognisable with errors.Is).
var (
	// ErrInvalidHeaders: the input cannot make an assertion snapd
	// accepts. The message names the header.
	ErrInvalidHeaders = errors.New("invalid assertion headers")
	// ErrUnsupportedKey: not an RSA key, or smaller than allowed.
	ErrUnsupportedKey = errors.New("unsupported signing key")
	// ErrSigning: the crypto.Signer failed.
	ErrSigning = errors.New("signing failed")
	// ErrSelfCheck: the signed result does not decode or verify. The
	// input was valid, so this points at the signer or at this package.
	ErrSelfCheck = errors.New("signed assertion failed its self-check")
)

// MinKeyBits is the default smallest signing key: snap signing keys are
// RSA-4096 (what `snap create-key` makes; snapd's external key manager
// refuses smaller ones). Device keys sign serial-requests with other
// sizes, hence WithMinKeyBits.
const MinKeyBits = 4096

// lowestMinKeyBits is the floor for WithMinKeyBits: Go's crypto/rsa
// refuses smaller keys since Go 1.24.
const lowestMinKeyBits = 1024

// keyPacketTime is the creation time snapd puts in every public-key packet
// it derives key ids from and encodes (v1FixedTimestamp in asserts).
var keyPacketTime = time.Date(2016, time.January, 1, 0, 0, 0, 0, time.UTC)

// noAuthorityTypes are the types snapd signs without authority-id
// (self-signed by the key they carry). The flag is unexported in asserts;
// a type missing here still cannot slip through, because the pre-signing
// decode checks authority-id presence the way snapd does.
var noAuthorityTypes = map[*asserts.AssertionType]bool{
	asserts.SerialRequestType:        true,
	asserts.AccountKeyRequestType:    true,
	asserts.DeviceSessionRequestType: true,
	asserts.ConfdbControlType:        true,
}

// Option adjusts a Signer.
type Option func(*options)

type options struct {
	minBits int
	now     func() time.Time
}

// WithMinKeyBits sets the smallest RSA modulus accepted (default
// MinKeyBits). Values below 1024 are refused by NewSigner.
func WithMinKeyBits(bits int) Option { return func(o *options) { o.minBits = bits } }

// WithClock sets the clock for signature creation times (default
// time.Now). Tests fix it to compare bytes with snapd's output.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// Signer signs assertions with one RSA key. It is safe for concurrent use
// if its crypto.Signer is.
type Signer struct {
	key   crypto.Signer
	pub   *rsa.PublicKey
	apub  asserts.PublicKey
	keyID string
	now   func() time.Time
	// checkedFull: a signature of this Signer (or of one it was rebound
	// from, see Rebind) passed snapd's own check (see selfCheck).
	checkedFull *atomic.Bool
}

// NewSigner wraps key. key.Sign is the only private-key operation ever
// used; for a token key pass one bound to the request's context.
func NewSigner(key crypto.Signer, opts ...Option) (*Signer, error) {
	o := options{minBits: MinKeyBits, now: time.Now}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.minBits < lowestMinKeyBits {
		return nil, fmt.Errorf("%w: minimum key size %d is below %d bits", ErrUnsupportedKey, o.minBits, lowestMinKeyBits)
	}
	if o.now == nil {
		o.now = time.Now
	}
	if key == nil {
		return nil, fmt.Errorf("%w: no key", ErrUnsupportedKey)
	}
	pk, err := publicOf(key)
	if err != nil {
		return nil, err
	}
	pub, ok := pk.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: %T is not an RSA public key; snap assertions are signed with RSA", ErrUnsupportedKey, pk)
	}
	if err := checkRSAPublic(pub); err != nil {
		return nil, err
	}
	if bits := pub.N.BitLen(); bits < o.minBits {
		return nil, fmt.Errorf("%w: RSA-%d, at least %d bits needed", ErrUnsupportedKey, bits, o.minBits)
	}
	apub := asserts.RSAPublicKey(pub)
	return &Signer{key: key, pub: pub, apub: apub, keyID: apub.ID(), now: o.now, checkedFull: new(atomic.Bool)}, nil
}

// Rebind returns a Signer like s that signs through key, which must be a
// handle on the same key pair (a token key bound to a request's context,
// say). It skips what NewSigner derives from the public key (the key id
// is a SHA3-384 over its OpenPGP encoding) and shares s's once-per-signer
// self-check state.
func (s *Signer) Rebind(key crypto.Signer) (*Signer, error) {
	if key == nil {
		return nil, fmt.Errorf("%w: no key", ErrUnsupportedKey)
	}
	pk, err := publicOf(key)
	if err != nil {
		return nil, err
	}
	if pub, ok := pk.(*rsa.PublicKey); !ok || !s.pub.Equal(pub) {
		return nil, fmt.Errorf("%w: the key to rebind to is not key %s", ErrUnsupportedKey, s.keyID)
	}
	c := *s
	c.key = key
	return &c, nil
}

// publicOf calls key.Public, which for a typed nil (say a nil
// *rsa.PrivateKey in the interface) panics inside the key's own method.
func publicOf(key crypto.Signer) (pub crypto.PublicKey, err error) {
	defer func() {
		if r := recover(); r != nil {
			pub, err = nil, fmt.Errorf("%w: the key's Public method failed: %v", ErrUnsupportedKey, r)
		}
	}()
	return key.Public(), nil
}

func checkRSAPublic(pub *rsa.PublicKey) error {
	if pub == nil || pub.N == nil || pub.N.Sign() <= 0 {
		return fmt.Errorf("%w: RSA public key without a modulus", ErrUnsupportedKey)
	}
	if pub.E < 3 || pub.E%2 == 0 {
		return fmt.Errorf("%w: RSA public exponent %d", ErrUnsupportedKey, pub.E)
	}
	return nil
}

// KeyID is this signer's sign-key-sha3-384.
func (s *Signer) KeyID() string { return s.keyID }

// PublicKey is the signing key's public half.
func (s *Signer) PublicKey() *rsa.PublicKey { return s.pub }

// Signed is a signed assertion: its encoding and its decoded form.
type Signed struct {
	Bytes     []byte
	Assertion asserts.Assertion
}

// Sign is NewSigner(key, opts...) followed by Signer.Sign, for one-off use.
func Sign(t *asserts.AssertionType, headers map[string]any, body []byte, key crypto.Signer, opts ...Option) (Signed, error) {
	s, err := NewSigner(key, opts...)
	if err != nil {
		return Signed{}, err
	}
	return s.Sign(t, headers, body)
}

// Sign assembles an assertion of type t from headers and body, signs it
// and self-checks it.
//
// Header values are strings, lists ([]any or []string) and maps
// (map[string]any or map[string]string), nested as snapd allows. Sign sets
// type, sign-key-sha3-384 and body-length (values given for them must
// agree), and format from asserts.SuggestFormat when not given. Other
// headers, authority-id included, are the caller's.
func (s *Signer) Sign(t *asserts.AssertionType, headers map[string]any, body []byte) (Signed, error) {
	content, err := s.assemble(t, headers, body)
	if err != nil {
		return Signed{}, err
	}
	if err := precheck(t, content); err != nil {
		return Signed{}, err
	}
	sig, raw, err := s.signature(content)
	if err != nil {
		return Signed{}, err
	}
	out := make([]byte, 0, len(content)+len(sig)+3)
	out = append(out, content...)
	out = append(out, "\n\n"...)
	out = append(out, sig...)
	// snapd ends every encoded assertion with a newline ("cat friendly").
	out = append(out, '\n')
	a, err := s.selfCheck(t, content, sig, out, raw)
	if err != nil {
		return Signed{}, err
	}
	return Signed{Bytes: out, Assertion: a}, nil
}

// assemble builds the signed content in snapd's canonical form: type,
// format (if > 0), authority-id, revision (if > 0), the primary key in
// the type's order, the other headers sorted, body-length (with a body),
// sign-key-sha3-384, then "\n\n" and the body.
func (s *Signer) assemble(t *asserts.AssertionType, in map[string]any, body []byte) ([]byte, error) {
	if t == nil || asserts.Type(t.Name) != t {
		return nil, fmt.Errorf("%w: not one of snapd's assertion types", ErrInvalidHeaders)
	}
	if !utf8.Valid(body) {
		return nil, fmt.Errorf("%w: %s body is not UTF-8", ErrInvalidHeaders, t.Name)
	}
	if len(body) > asserts.MaxBodySize {
		return nil, fmt.Errorf("%w: %s body of %d bytes is over snapd's limit of %d", ErrInvalidHeaders, t.Name, len(body), asserts.MaxBodySize)
	}
	h, err := normalizeHeaders(in)
	if err != nil {
		return nil, err
	}

	if err := agree(h, "type", t.Name); err != nil {
		return nil, err
	}
	if err := agree(h, "sign-key-sha3-384", s.keyID); err != nil {
		return nil, err
	}
	if err := agree(h, "body-length", strconv.Itoa(len(body))); err != nil {
		return nil, err
	}
	delete(h, "type")
	delete(h, "sign-key-sha3-384")
	delete(h, "body-length")

	if noAuthorityTypes[t] {
		if _, ok := h["authority-id"]; ok {
			return nil, fmt.Errorf("%w: %s assertions are self-signed and have no authority-id", ErrInvalidHeaders, t.Name)
		}
	} else if v, _ := h["authority-id"].(string); v == "" {
		return nil, fmt.Errorf("%w: authority-id must be a non-empty string", ErrInvalidHeaders)
	}

	format, err := s.format(t, h, body)
	if err != nil {
		return nil, err
	}
	delete(h, "format")
	revision := 0
	if v, ok := h["revision"]; ok {
		if revision, err = iteration("revision", v); err != nil {
			return nil, err
		}
		delete(h, "revision")
	}

	var buf bytes.Buffer
	buf.Grow(512 + len(body))
	buf.WriteString("type: ")
	buf.WriteString(t.Name)
	if format > 0 {
		appendEntry(&buf, "format:", strconv.Itoa(format), 0)
	}
	if v, ok := h["authority-id"]; ok {
		appendEntry(&buf, "authority-id:", v, 0)
		delete(h, "authority-id")
	}
	if revision > 0 {
		appendEntry(&buf, "revision:", strconv.Itoa(revision), 0)
	}
	for _, name := range t.PrimaryKey {
		defl := t.OptionalPrimaryKeyDefaults[name]
		v, ok := h[name]
		delete(h, name)
		if !ok {
			if defl != "" {
				// Left out, like a value equal to the default:
				// decoders fill it in.
				continue
			}
			return nil, fmt.Errorf("%w: primary key header %q is missing", ErrInvalidHeaders, name)
		}
		str, isStr := v.(string)
		if !isStr || str == "" {
			return nil, fmt.Errorf("%w: primary key header %q must be a non-empty string", ErrInvalidHeaders, name)
		}
		if strings.Contains(str, "/") {
			return nil, fmt.Errorf("%w: primary key header %q cannot contain '/': %q", ErrInvalidHeaders, name, str)
		}
		if strings.ContainsAny(str, "\n\r") {
			return nil, fmt.Errorf("%w: primary key header %q must be one line", ErrInvalidHeaders, name)
		}
		if str != defl {
			appendEntry(&buf, name+":", str, 0)
		}
	}
	rest := make([]string, 0, len(h))
	for name := range h {
		rest = append(rest, name)
	}
	sort.Strings(rest)
	for _, name := range rest {
		appendEntry(&buf, name+":", h[name], 0)
	}
	if len(body) > 0 {
		appendEntry(&buf, "body-length:", strconv.Itoa(len(body)), 0)
	}
	appendEntry(&buf, "sign-key-sha3-384:", s.keyID, 0)
	if buf.Len() > asserts.MaxHeadersSize {
		return nil, fmt.Errorf("%w: %s headers take %d bytes, over snapd's limit of %d", ErrInvalidHeaders, t.Name, buf.Len(), asserts.MaxHeadersSize)
	}
	if len(body) > 0 {
		buf.WriteString("\n\n")
		buf.Write(body)
	}
	return buf.Bytes(), nil
}

// agree accepts a signer-owned header the caller also set, if it says
// what the signer would: handy when re-signing a decoded assertion's
// Headers().
func agree(h map[string]any, name, want string) error {
	v, ok := h[name]
	if !ok {
		return nil
	}
	if str, isStr := v.(string); !isStr || str != want {
		return fmt.Errorf("%w: %q is set by the signer (to %q), not %v", ErrInvalidHeaders, name, want, v)
	}
	return nil
}

// format picks the format the way snapd's signing does: the caller's if
// given, which must cover the features used and be supported; otherwise
// the lowest that covers them.
func (s *Signer) format(t *asserts.AssertionType, h map[string]any, body []byte) (int, error) {
	suggested, err := asserts.SuggestFormat(t, h, body)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrInvalidHeaders, err)
	}
	v, ok := h["format"]
	if !ok {
		return suggested, nil
	}
	format, err := iteration("format", v)
	if err != nil {
		return 0, err
	}
	if format < suggested {
		return 0, fmt.Errorf("%w: format %d is lower than %d, which the %s headers used need", ErrInvalidHeaders, format, suggested, t.Name)
	}
	if highest := t.MaxSupportedFormat(); format > highest {
		return 0, fmt.Errorf("%w: format %d is higher than %d, the highest snapd supports for %s", ErrInvalidHeaders, format, highest, t.Name)
	}
	return format, nil
}

// iteration parses a format or revision: a decimal string without sign or
// leading zeros, as snapd's decoder wants.
func iteration(name string, v any) (int, error) {
	str, ok := v.(string)
	bad := !ok || str == "" || (len(str) > 1 && str[0] == '0')
	for i := 0; ok && i < len(str); i++ {
		if str[i] < '0' || str[i] > '9' {
			bad = true
		}
	}
	n, err := strconv.Atoi(str)
	if bad || err != nil {
		return 0, fmt.Errorf("%w: %q must be a non-negative decimal integer, not %v", ErrInvalidHeaders, name, v)
	}
	return n, nil
}

// precheck runs snapd's decoder on the content with a placeholder
// signature: it parses the headers back and applies the type's own checks,
// without looking at the signature.
func precheck(t *asserts.AssertionType, content []byte) error {
	probe := make([]byte, 0, len(content)+3)
	probe = append(append(probe, content...), "\n\nX"...)
	a, err := asserts.Decode(probe)
	if err != nil {
		return fmt.Errorf("%w: snapd would refuse this %s: %v", ErrInvalidHeaders, t.Name, err)
	}
	if a.Type() != t {
		return fmt.Errorf("%w: content decodes as %s, not %s", ErrInvalidHeaders, a.Type().Name, t.Name)
	}
	return nil
}

// signature makes the OpenPGP v4 binary-document signature over content
// (SHA-512; the creation time is the only hashed subpacket, no issuer) and
// encodes it as snapd does: base64 of 0x01 || packet, in 76-column lines.
func (s *Signer) signature(content []byte) ([]byte, rawSignature, error) {
	now := s.now()
	if u := now.Unix(); u < 0 || u > math.MaxUint32 {
		return nil, rawSignature{}, fmt.Errorf("%w: clock reads %v, which an OpenPGP signature cannot carry", ErrSigning, now)
	}
	rec := &recordingSigner{Signer: s.key}
	priv := packet.NewSignerPrivateKey(keyPacketTime, rec)
	sig := &packet.Signature{
		SigType:      packet.SigTypeBinary,
		PubKeyAlgo:   packet.PubKeyAlgoRSA,
		Hash:         crypto.SHA512,
		CreationTime: now,
	}
	h := sha512.New()
	h.Write(content)
	if err := sig.Sign(h, priv, nil); err != nil {
		return nil, rawSignature{}, fmt.Errorf("%w: %w", ErrSigning, err)
	}
	var pkt bytes.Buffer
	pkt.WriteByte(0x01)
	if err := sig.Serialize(&pkt); err != nil {
		return nil, rawSignature{}, fmt.Errorf("%w: serializing the signature packet: %w", ErrSigning, err)
	}
	flat := base64.StdEncoding.EncodeToString(pkt.Bytes())
	const width = 76
	out := make([]byte, 0, len(flat)+len(flat)/width)
	for len(flat) > width {
		out = append(out, flat[:width]...)
		out = append(out, '\n')
		flat = flat[width:]
	}
	return append(out, flat...), rec.rawSignature, nil
}

// rawSignature is what went to and came back from the key: the digest of
// the content and OpenPGP trailer, and the RSA signature.
type rawSignature struct {
	digest, sig []byte
}

// recordingSigner keeps the digest and signature of the one Sign call the
// OpenPGP packet makes, for the self-check.
type recordingSigner struct {
	crypto.Signer
	rawSignature
}

func (r *recordingSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := r.Signer.Sign(rand, digest, opts)
	if err == nil {
		r.digest, r.sig = append([]byte(nil), digest...), sig
	}
	return sig, err
}

// selfCheck decodes what is about to be returned and checks that it
// carries exactly the content and signature text made, and that the
// key's RSA signature verifies for the digest it was given. That catches
// a faulty token on every signature. The first signature of each Signer
// is also checked the way snapd checks it (asserts.SignatureCheck: OpenPGP
// packet parsed, digest recomputed from content and trailer, RSA verified),
// which proves the packet encoding; it depends only on code, not on the
// token, so once per signer is enough, and it costs about as much again
// as the rest of the self-check.
func (s *Signer) selfCheck(t *asserts.AssertionType, content, sigText, encoded []byte, raw rawSignature) (asserts.Assertion, error) {
	a, err := asserts.Decode(encoded)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSelfCheck, err)
	}
	if a.Type() != t {
		return nil, fmt.Errorf("%w: decoded as %s, not %s", ErrSelfCheck, a.Type().Name, t.Name)
	}
	gotContent, gotSig := a.Signature()
	if !bytes.Equal(gotContent, content) {
		return nil, fmt.Errorf("%w: decoded content differs from the signed content", ErrSelfCheck)
	}
	// The encoding ends with a newline, which the decoder keeps on the
	// signature.
	if !bytes.Equal(bytes.TrimSuffix(gotSig, []byte("\n")), sigText) {
		return nil, fmt.Errorf("%w: decoded signature differs from the one made", ErrSelfCheck)
	}
	if err := verifySHA512(s.pub, raw.digest, raw.sig); err != nil {
		return nil, fmt.Errorf("%w: signature does not verify with key %s: %v", ErrSelfCheck, s.keyID, err)
	}
	if !s.checkedFull.Load() {
		if err := asserts.SignatureCheck(a, s.apub); err != nil {
			return nil, fmt.Errorf("%w: signature does not verify with key %s: %v", ErrSelfCheck, s.keyID, err)
		}
		s.checkedFull.Store(true)
	}
	return a, nil
}
