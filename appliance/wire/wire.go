// Package wire holds the JSON bodies of keyrack's HTTP API: what the
// daemon writes and the officers' CLI reads, and the requests the CLI
// sends. One definition serves both sides, so they cannot drift apart.
//
// It may import the standard library only: the CLI links it, and must not
// link the server, echo or the PKCS#11 binding through it.
package wire

import (
	"encoding/json"
	"time"
)

// Version is the build's version, set at build time (-ldflags -X).
var Version = "dev"

// ErrorBody is the shape of every error answer. snapd shows an error's
// message to the user only when Content-Type is exactly application/json
// and the body has a top-level "message" (its retryBadStatus); Error
// carries the same code and message for clients written against the
// earlier, nested shape.
type ErrorBody struct {
	Code    string      `json:"code"`
	Message string      `json:"message"`
	Error   ErrorDetail `json:"error"`
}

// ErrorDetail is the stable code and the message of an error answer.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// HealthSummary is GET /v1/health for anyone: up or down, and why in one
// fixed word (ok, token-unavailable, store-failed). Details are for
// officers (Health).
type HealthSummary struct {
	Status string `json:"status"`
	Reason string `json:"reason"`
}

// Health is GET /v1/health for an officer (with a session).
type Health struct {
	Status  string      `json:"status"`
	Reason  string      `json:"reason"`
	Version string      `json:"version"`
	Token   TokenStatus `json:"token"`
	// Store is "ok", or why the store refuses writes until the daemon
	// is restarted.
	Store string `json:"store"`
}

// TokenStatus is what the last check of the token found.
type TokenStatus struct {
	Up           bool      `json:"up"`
	Label        string    `json:"label,omitempty"`
	Serial       string    `json:"serial,omitempty"`
	Manufacturer string    `json:"manufacturer,omitempty"`
	Model        string    `json:"model,omitempty"`
	Sessions     int       `json:"sessions"`
	InUse        int       `json:"sessions_in_use"`
	Recoveries   uint64    `json:"recoveries"`
	Error        string    `json:"error,omitempty"`
	CheckedAt    time.Time `json:"checked_at"`
}

// ImportKey is GET /v1/import-key: the public half of the key officers
// wrap brand keys to.
type ImportKey struct {
	PublicKeyPEM  string `json:"public_key_pem"`
	Fingerprint   string `json:"fingerprint_sha256"`
	Bits          int    `json:"bits"`
	Method        string `json:"method"`
	TokenMethod   string `json:"token_mechanism"`
	WrapStructure string `json:"wrap_structure"`
}

// Key is a signing key's record, and with GET /v1/keys/NAME what the token
// says of its object.
type Key struct {
	Name          string          `json:"name"`
	KeyID         string          `json:"sign-key-sha3-384,omitempty"`
	PublicKey     string          `json:"public-key,omitempty"`
	Bits          int             `json:"bits"`
	Roles         json.RawMessage `json:"roles"`
	Origin        string          `json:"origin"`
	State         string          `json:"state"`
	CreatedAt     time.Time       `json:"created-at"`
	AccountKey    bool            `json:"account-key-present"`
	TokenObject   *TokenObject    `json:"token,omitempty"`
	ProposalID    string          `json:"proposal"`
	Constraints   []any           `json:"constraints,omitempty"`
	ModelPatterns []string        `json:"model-patterns,omitempty"`
}

// TokenObject is what the token reports of a key's private object.
type TokenObject struct {
	Present          bool   `json:"present"`
	Origin           string `json:"origin,omitempty"` // from CKA_LOCAL
	Sensitive        bool   `json:"sensitive"`
	Extractable      bool   `json:"extractable"`
	NeverExtractable bool   `json:"never-extractable"`
	Error            string `json:"error,omitempty"`
}

// KeyList is GET /v1/keys.
type KeyList struct {
	Keys []Key `json:"keys"`
}

// KeyRequest proposes a key: generate (name and roles), import (Blob, the
// wrapped key) or upload (Key, the armored OpenPGP or PEM secret key).
// Blob and Key are base64 in JSON.
type KeyRequest struct {
	Name  string          `json:"name"`
	Roles json.RawMessage `json:"roles"`
	Blob  []byte          `json:"blob,omitempty"`
	Key   []byte          `json:"key,omitempty"`
	// KeyID is the sign-key-sha3-384 of the wrapped key, as `keyrack
	// wrap` prints it; required with Blob.
	KeyID string `json:"sign-key-sha3-384,omitempty"`
}

// ReplicateRequest carries a key wrapped to this appliance's import key.
type ReplicateRequest struct {
	Blob []byte `json:"blob"`
}

// ClientRequest proposes an API client with its kind and scope. Kind is
// "device-service" (types: serial; its key goes into gadget images and is
// public) or "signing" (types among model, system-user and preseed; its key
// is a secret, used over TLS); when empty it follows from Types, and a mix
// of serial with another type is refused. A signing client may be bound to
// a TLS client certificate (ClientCertSHA256, the SHA-256 of its DER in
// hex) and has Limits (unset fields: the defaults).
type ClientRequest struct {
	Name             string        `json:"name"`
	Kind             string        `json:"kind,omitempty"`
	Brand            string        `json:"brand"`
	Models           []string      `json:"models"`
	Types            []string      `json:"types"`
	ClientCertSHA256 string        `json:"client-cert-sha256,omitempty"`
	Limits           *ClientLimits `json:"limits,omitempty"`
}

// ClientLimits bound a signing client's system-user and preseed
// assertions. In a request an unset field is the default (at creation:
// the client's models, 365 days, no password, SSH keys, serials required)
// or the current value (POST /v1/clients/NAME/limits); in a listing every
// field is set.
type ClientLimits struct {
	// Models a system-user or preseed may name: some of the client's.
	Models []string `json:"models,omitempty"`
	// MaxValidityDays bounds a system-user's until: at most this many
	// days after its since and after the moment it is signed.
	MaxValidityDays int   `json:"max-validity-days,omitempty"`
	Password        *bool `json:"password,omitempty"`
	SSHKeys         *bool `json:"ssh-keys,omitempty"`
	SerialsRequired *bool `json:"serials-required,omitempty"`
}

// ModelBinding proposes which key signs which assertion type of a model,
// and where its serials come from.
type ModelBinding struct {
	Brand        string            `json:"brand"`
	Model        string            `json:"model"`
	Keys         map[string]string `json:"keys"`          // assertion type -> key name
	SerialSource string            `json:"serial-source"` // request (default) | assign
	SerialPrefix string            `json:"serial-prefix,omitempty"`
	AllowRekey   bool              `json:"allow-rekey,omitempty"`
}

// Proposal is a ceremony operation as officers see it before approving.
// Content is what an approval signs, exactly: the canonical JSON of the
// appliance's id, the proposal's id, kind, summary, every parameter (a
// wrapped blob by its SHA-256), proposer, creation and expiry.
type Proposal struct {
	ID        string         `json:"id"`
	Kind      string         `json:"kind"`
	Summary   string         `json:"summary"`
	Content   string         `json:"content"`
	Details   map[string]any `json:"details"`
	Proposer  string         `json:"proposer"`
	State     string         `json:"state"`
	Result    string         `json:"result,omitempty"`
	Approvals []string       `json:"approvals"`
	Quorum    int            `json:"quorum"`
	CreatedAt time.Time      `json:"created-at"`
	ExpiresAt time.Time      `json:"expires-at"`
	DecidedAt *time.Time     `json:"decided-at,omitempty"`
}

// ProposalList is GET /v1/proposals.
type ProposalList struct {
	Proposals []Proposal `json:"proposals"`
}

// CeremonyAnswer answers a proposal, an approval or a cancellation.
type CeremonyAnswer struct {
	Proposal Proposal `json:"proposal"`
	Executed bool     `json:"executed"`
	// Credential is a new officer's or client's secret, in the answer to
	// the approval that created it, and nowhere else.
	Credential     string `json:"credential,omitempty"`
	CredentialNote string `json:"credential_note,omitempty"`
}

// Officer is one security officer and the fingerprint of their key.
type Officer struct {
	Name      string `json:"name"`
	PublicKey string `json:"public-key,omitempty"`
	KeyFP     string `json:"fingerprint,omitempty"`
	// ClientCertSHA256 is the TLS client certificate bound to the
	// officer, if any.
	ClientCertSHA256 string     `json:"client-cert-sha256,omitempty"`
	CreatedAt        time.Time  `json:"created-at"`
	RevokedAt        *time.Time `json:"revoked-at,omitempty"`
}

// OfficerList is GET /v1/officers.
type OfficerList struct {
	Officers []Officer `json:"officers"`
	Quorum   int       `json:"quorum"`
}

// Client is one API client, its kind and its scope; a signing client also
// its bound certificate, if any, and its limits.
type Client struct {
	Name             string        `json:"name"`
	Kind             string        `json:"kind"`
	Brand            string        `json:"brand"`
	Models           []string      `json:"models"`
	Types            []string      `json:"types"`
	ClientCertSHA256 string        `json:"client-cert-sha256,omitempty"`
	Limits           *ClientLimits `json:"limits,omitempty"`
	CreatedAt        time.Time     `json:"created-at"`
	RevokedAt        *time.Time    `json:"revoked-at,omitempty"`
}

// ClientList is GET /v1/clients.
type ClientList struct {
	Clients []Client `json:"clients"`
}

// Model is a model's binding to its keys.
type Model struct {
	Brand        string            `json:"brand"`
	Model        string            `json:"model"`
	Keys         map[string]string `json:"keys"`
	SerialSource string            `json:"serial-source"`
	SerialPrefix string            `json:"serial-prefix,omitempty"`
	NextSerial   int64             `json:"next-serial,omitempty"`
	AllowRekey   bool              `json:"allow-rekey"`
	UpdatedAt    time.Time         `json:"updated-at"`
}

// ModelList is GET /v1/models.
type ModelList struct {
	Models []Model `json:"models"`
}

// AuditPage is the body of GET /v1/audit. Next is set when more events
// follow this page: ask again with after=Next (the same cursor is in the
// answer's Link header, rel="next"); it is absent on the last page.
type AuditPage struct {
	Events []AuditEvent `json:"events"`
	Next   int64        `json:"next,omitempty"`
}

// AuditEvent is one audit event: details as the JSON object they are,
// hashes in hex.
type AuditEvent struct {
	Seq      int64           `json:"seq"`
	Time     time.Time       `json:"time"`
	Actor    string          `json:"actor"`
	Action   string          `json:"action"`
	Subject  string          `json:"subject"`
	Result   string          `json:"result"`
	Details  json.RawMessage `json:"details"`
	PrevHash string          `json:"prev_hash"`
	Hash     string          `json:"hash"`
}

// LogEntry is one row of the signing log.
type LogEntry struct {
	ID          int64     `json:"id"`
	Time        time.Time `json:"time"`
	Type        string    `json:"type"`
	KeyID       string    `json:"key-id"`
	Brand       string    `json:"brand"`
	Model       string    `json:"model"`
	Serial      string    `json:"serial,omitempty"`
	DeviceKeyID string    `json:"device-key-id,omitempty"`
	Client      string    `json:"client"`
	Revision    int       `json:"revision"`
	Digest      string    `json:"digest"`
}

// LogPage is GET /v1/signing-log as JSON. Next is set when more rows
// match than this page holds: ask again with after=Next and the same
// filters (the same cursor is in the answer's Link header, rel="next");
// it is absent on the last page.
type LogPage struct {
	Entries []LogEntry `json:"entries"`
	Next    int64      `json:"next,omitempty"`
}

// NextHeader names the header of a CSV signing-log answer asked for with
// a limit that carries the next page's cursor when more rows match (a
// JSON answer has it in its body as next).
const NextHeader = "Keyrack-Next"

// RowsTrailer names the HTTP trailer that ends a whole CSV export of the
// signing log with how many rows it holds: an export without it was cut
// short.
const RowsTrailer = "Keyrack-Rows"

// KeyExport is GET /v1/keys/NAME/export: what registering the key with
// the Brand Store takes.
type KeyExport struct {
	KeyID             string `json:"sign-key-sha3-384"`
	AccountKeyRequest string `json:"account-key-request"`
	PublicKey         string `json:"public-key"`
	Constraints       []any  `json:"constraints"`
	Note              string `json:"note"`
}

// AccountKeyStored answers PUT /v1/keys/NAME/account-key.
type AccountKeyStored struct {
	Name       string `json:"name"`
	AccountKey bool   `json:"account-key-present"`
	AccountID  string `json:"account-id"`
}

// RequestID answers POST /v1/request-id.
type RequestID struct {
	RequestID string `json:"request-id"`
}

// ModelSignRequest asks for a signature of the model template officers
// approved for a model (POST /v1/model). BrandID defaults to the client's
// brand. Headers and Body are refused when given: they are kept only so
// that a client of the earlier shape, which sent its own headers, is told
// why instead of meeting an unknown field.
type ModelSignRequest struct {
	BrandID string         `json:"brand-id,omitempty"`
	Model   string         `json:"model"`
	Headers map[string]any `json:"headers,omitempty"`
	Body    string         `json:"body,omitempty"`
}

// TemplateRequest proposes a model template (POST /v1/models/templates):
// Statement is the JSON file `snap sign` takes, as its bytes.
type TemplateRequest struct {
	Brand     string `json:"brand"`
	Model     string `json:"model"`
	Statement string `json:"statement"`
}

// Template is an approved model template.
type Template struct {
	Brand        string         `json:"brand"`
	Model        string         `json:"model"`
	Headers      map[string]any `json:"headers"`
	Body         string         `json:"body,omitempty"`
	Proposal     string         `json:"proposal"`
	LastRevision int64          `json:"last-revision"`
	UpdatedAt    time.Time      `json:"updated-at"`
}

// TemplateList is GET /v1/models/templates.
type TemplateList struct {
	Templates []Template `json:"templates"`
}

// SignRequest proposes an ad-hoc signature (POST /v1/sign): Statement,
// the JSON file `snap sign` takes, signed with key Key once the quorum
// approves.
type SignRequest struct {
	Key       string `json:"key"`
	Statement string `json:"statement"`
}

// SystemUserRequest asks for a system-user assertion. The password is
// hashed by the appliance and kept nowhere.
type SystemUserRequest struct {
	Email    string    `json:"email"`
	Username string    `json:"username"`
	Name     string    `json:"name"`
	Password string    `json:"password,omitempty"`
	SSHKeys  []string  `json:"ssh-keys,omitempty"`
	Models   []string  `json:"models"`
	Serials  []string  `json:"serials,omitempty"`
	Since    time.Time `json:"since"`
	Until    time.Time `json:"until"`
}

// PreseedRequest asks for a preseed assertion.
type PreseedRequest struct {
	Model           string        `json:"model"`
	SystemLabel     string        `json:"system-label"`
	Series          string        `json:"series,omitempty"`
	ArtifactSHA3384 string        `json:"artifact-sha3-384"`
	Snaps           []PreseedSnap `json:"snaps"`
}

// PreseedSnap is one snap of a preseed request.
type PreseedSnap struct {
	Name     string `json:"name"`
	ID       string `json:"id,omitempty"`
	Revision int    `json:"revision,omitempty"`
}

// LoginRequest asks for a login challenge for an officer, named or known
// by their public key (authorized_keys form).
type LoginRequest struct {
	Officer   string `json:"officer,omitempty"`
	PublicKey string `json:"public-key,omitempty"`
}

// LoginChallenge is what an officer signs to log in: Content, in the
// officer login domain, with the officer's key. It is usable once, until
// ExpiresAt.
type LoginChallenge struct {
	ID        string    `json:"id"`
	Content   string    `json:"content"`
	ExpiresAt time.Time `json:"expires-at"`
}

// LoginAnswer is an officer's signature over a challenge's content (SSH
// wire form, base64 in JSON).
type LoginAnswer struct {
	ID        string `json:"id"`
	Signature []byte `json:"signature"`
}

// Session is an officer's session: the token goes in Authorization:
// Bearer on officer endpoints until ExpiresAt (15 minutes at most).
type Session struct {
	Officer   string    `json:"officer"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires-at"`
}

// ApproveRequest is an officer's approval: a signature over the
// proposal's content (Proposal.Content) in the approval domain.
type ApproveRequest struct {
	Signature []byte `json:"signature"`
}

// RekeyRequest proposes that a serial may move to a new device key, once.
type RekeyRequest struct {
	Brand     string `json:"brand"`
	Model     string `json:"model"`
	Serial    string `json:"serial"`
	DeviceKey string `json:"device-key-sha3-384"`
}

// QuorumRequest proposes a new quorum.
type QuorumRequest struct {
	Quorum int `json:"quorum"`
}

// OfficerRequest proposes an officer with the public key they made
// (authorized_keys form), or a new key for an officer (rotate).
type OfficerRequest struct {
	Name      string `json:"name"`
	PublicKey string `json:"public-key"`
	// ClientCertSHA256 binds the officer to their TLS client certificate
	// (SHA-256 of its DER, hex), for appliances that require one.
	ClientCertSHA256 string `json:"client-cert-sha256,omitempty"`
}
