package wire

import "time"

// AuditKey is the public half of an appliance's audit key, the key its
// token signs audit checkpoints with.
type AuditKey struct {
	PublicKeyPEM string    `json:"public_key_pem"`
	Fingerprint  string    `json:"fingerprint_sha256"` // SHA-256 of the PKIX DER, hex
	Algorithm    string    `json:"algorithm"`
	TokenSerial  string    `json:"token_serial"`
	EventSeq     int64     `json:"event_seq"` // the audit event that recorded it
	CreatedAt    time.Time `json:"created_at"`
}

// AuditKeyAnswer is GET /v1/audit-key: this appliance's audit key, and
// every audit key on record in its store (one per token of the appliances
// sharing it).
type AuditKeyAnswer struct {
	AuditKey
	Keys []AuditKey `json:"keys"`
}

// AuditCheckpoint is a signed head of the audit chain: GET /v1/audit/head,
// what `keyrack audit head` saves, and a line of an export. Hashes are hex,
// the signature base64 (ASN.1 ECDSA over SHA-256 of the signed bytes).
type AuditCheckpoint struct {
	Seq       int64     `json:"seq"`
	Head      string    `json:"head"`
	Time      time.Time `json:"time"`
	Appliance string    `json:"appliance"`
	PrevSeq   int64     `json:"prev_seq"`
	PrevHead  string    `json:"prev_head"`
	Key       string    `json:"key_fingerprint_sha256"`
	Signature []byte    `json:"signature"`
	EventSeq  int64     `json:"event_seq"`
	// PublicKeyPEM is the signing audit key, given with a head so that
	// its signature can be checked on its own; verifiers check it is the
	// key the chain records under Key.
	PublicKeyPEM string `json:"public_key_pem,omitempty"`
}

// CheckpointPage is GET /v1/audit/checkpoints: checkpoints in chain order.
type CheckpointPage struct {
	Checkpoints []AuditCheckpoint `json:"checkpoints"`
}

// ExportFormat names the format of `keyrack audit export`.
const ExportFormat = "keyrack-audit-export/1"

// ExportLine is one line of an export (JSON lines): exactly one field is
// set. An export is a header, the audit keys on record, then the events
// in chain order, each audit.checkpoint event followed by the checkpoint
// row it recorded, and an end line with the counts (so a cut file is
// told from a short chain).
type ExportLine struct {
	Header     *ExportHeader    `json:"header,omitempty"`
	AuditKey   *AuditKey        `json:"audit_key,omitempty"`
	Event      *AuditEvent      `json:"event,omitempty"`
	Checkpoint *AuditCheckpoint `json:"checkpoint,omitempty"`
	End        *ExportEnd       `json:"end,omitempty"`
}

// ExportHeader opens an export.
type ExportHeader struct {
	Format     string    `json:"format"`
	ExportedAt time.Time `json:"exported_at"`
	URL        string    `json:"url,omitempty"`
}

// ExportEnd closes an export.
type ExportEnd struct {
	Events      int64 `json:"events"`
	Checkpoints int64 `json:"checkpoints"`
	AuditKeys   int64 `json:"audit_keys"`
}
