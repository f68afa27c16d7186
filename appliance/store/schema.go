package store

// sqliteDialect's migrations. Never edit an applied migration: add one.
var sqliteDialect = dialect{
	name: "sqlite",
	// Every commit is synchronous=NORMAL (in WAL mode: the log is written,
	// not synced); the store syncs the log itself for durable Updates, off
	// the writer's path (see DB.Update).
	migrations: []string{
		// 1: the ceremony: keys, officers, proposals, clients, audit.
		`
CREATE TABLE keys (
	name        TEXT PRIMARY KEY,
	cka_id      BLOB NOT NULL UNIQUE,
	key_id      TEXT UNIQUE,           -- sign-key-sha3-384, once known
	public_key  BLOB,                  -- PKIX DER
	bits        INTEGER NOT NULL DEFAULT 0,
	origin      TEXT NOT NULL,         -- generated | imported
	roles       TEXT NOT NULL,         -- JSON role scopes, fixed at creation
	state       TEXT NOT NULL,         -- pending | active | disabled | destroyed | failed
	account_key BLOB,                  -- the Brand Store's account-key assertion
	proposal_id TEXT NOT NULL,
	created_us  BIGINT NOT NULL,
	updated_us  BIGINT NOT NULL
);
CREATE TABLE officers (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	name        TEXT NOT NULL UNIQUE,
	secret_hash BLOB NOT NULL,
	created_us  BIGINT NOT NULL,
	revoked_us  BIGINT
);
CREATE TABLE proposals (
	id          TEXT PRIMARY KEY,
	kind        TEXT NOT NULL,
	payload     TEXT NOT NULL,         -- JSON; never a plaintext secret
	summary     TEXT NOT NULL,
	proposer    TEXT NOT NULL,
	state       TEXT NOT NULL,         -- pending | executed | failed | cancelled | expired
	result      TEXT NOT NULL DEFAULT '',
	created_us  BIGINT NOT NULL,
	expires_us  BIGINT NOT NULL,
	decided_us  BIGINT
);
CREATE TABLE approvals (
	proposal_id TEXT NOT NULL REFERENCES proposals(id),
	officer     TEXT NOT NULL,
	created_us  BIGINT NOT NULL,
	PRIMARY KEY (proposal_id, officer)
);
CREATE TABLE clients (
	id          TEXT PRIMARY KEY,
	name        TEXT NOT NULL UNIQUE,
	brand       TEXT NOT NULL,
	models      TEXT NOT NULL,         -- JSON list
	types       TEXT NOT NULL,         -- JSON list
	secret_hash BLOB NOT NULL,
	created_us  BIGINT NOT NULL,
	revoked_us  BIGINT
);
CREATE TABLE audit (
	seq         INTEGER PRIMARY KEY,
	time_us     BIGINT NOT NULL,
	actor       TEXT NOT NULL,
	action      TEXT NOT NULL,
	subject     TEXT NOT NULL,
	result      TEXT NOT NULL,
	details     TEXT NOT NULL,
	prev_hash   BLOB NOT NULL,
	hash        BLOB NOT NULL
);
CREATE TABLE settings (
	name        TEXT PRIMARY KEY,
	value       TEXT NOT NULL
);
`,
		// 2: device registration and the signing log.
		`
CREATE TABLE models (
	brand          TEXT NOT NULL,
	model          TEXT NOT NULL,
	keys           TEXT NOT NULL,      -- JSON {assertion type: key name}
	serial_source  TEXT NOT NULL,      -- request | assign
	serial_prefix  TEXT NOT NULL DEFAULT '',
	next_serial    BIGINT NOT NULL DEFAULT 1,
	allow_rekey    INTEGER NOT NULL DEFAULT 0,
	proposal_id    TEXT NOT NULL,
	created_us     BIGINT NOT NULL,
	updated_us     BIGINT NOT NULL,
	PRIMARY KEY (brand, model)
);
CREATE TABLE nonces (
	id          TEXT PRIMARY KEY,
	client      TEXT NOT NULL,
	state       TEXT NOT NULL,         -- issued | claimed | consumed
	created_us  BIGINT NOT NULL,
	expires_us  BIGINT NOT NULL,
	used_us     BIGINT
);
CREATE INDEX nonces_expiry ON nonces (expires_us);
CREATE TABLE serials (
	brand         TEXT NOT NULL,
	model         TEXT NOT NULL,
	serial        TEXT NOT NULL,
	device_key_id TEXT NOT NULL,
	pending_key_id TEXT,               -- the new device key while a re-key is signed
	revision      INTEGER NOT NULL,
	state         TEXT NOT NULL,       -- signing | issued
	assertion     BLOB,
	client        TEXT NOT NULL,
	nonce         TEXT NOT NULL,
	updated_us    BIGINT NOT NULL,
	PRIMARY KEY (brand, model, serial)
);
CREATE TABLE signing_log (
	id            INTEGER PRIMARY KEY AUTOINCREMENT,
	time_us       BIGINT NOT NULL,
	type          TEXT NOT NULL,
	key_id        TEXT NOT NULL,
	brand         TEXT NOT NULL,
	model         TEXT NOT NULL,
	serial        TEXT NOT NULL DEFAULT '',
	device_key_id TEXT NOT NULL DEFAULT '',
	client        TEXT NOT NULL,
	revision      INTEGER NOT NULL DEFAULT 0,
	digest        TEXT NOT NULL        -- sha3-384 of the encoded assertion, base64url
);
CREATE INDEX signing_log_lookup ON signing_log (brand, model, serial);
`,
		// 3: officers are public keys they made and keep; an approval is a
		// signature by one over the proposal's canonical content; officers
		// log in by signing a challenge and hold a short session.
		`
ALTER TABLE officers ADD COLUMN public_key TEXT NOT NULL DEFAULT '';   -- authorized_keys line; '' for a pre-key officer
ALTER TABLE officers ADD COLUMN cert_sha256 TEXT NOT NULL DEFAULT '';  -- the TLS client certificate bound at enrolment, if any
ALTER TABLE proposals ADD COLUMN content TEXT NOT NULL DEFAULT '';     -- the canonical content officers sign
ALTER TABLE proposals ADD COLUMN lease_us BIGINT;                      -- while executing: until when
ALTER TABLE approvals ADD COLUMN signature BLOB;                       -- SSH wire form, over content
CREATE TABLE officer_challenges (
	id         TEXT PRIMARY KEY,
	officer    TEXT NOT NULL,
	challenge  TEXT NOT NULL,
	expires_us BIGINT NOT NULL
);
CREATE TABLE officer_sessions (
	token_hash  BLOB PRIMARY KEY,                                      -- SHA-256 of the session token
	officer     TEXT NOT NULL,
	cert_sha256 TEXT NOT NULL DEFAULT '',                              -- the client certificate it was opened with
	expires_us  BIGINT NOT NULL
);
`,
		// 4: one device key, one serial, where the appliance assigns
		// serials; a serial moves to another device key only with proof
		// or an officer's grant. Existing assigned serials are bound to
		// their device keys: a key that was given several (before this
		// rule), to the one issued last, the one it most likely holds.
		`
CREATE TABLE device_serials (
	brand         TEXT NOT NULL,
	model         TEXT NOT NULL,
	device_key_id TEXT NOT NULL,
	serial        TEXT NOT NULL,
	PRIMARY KEY (brand, model, device_key_id)
);
INSERT INTO device_serials (brand, model, device_key_id, serial)
	SELECT s.brand, s.model, s.device_key_id, s.serial FROM serials s
	JOIN models m ON m.brand = s.brand AND m.model = s.model
	WHERE m.serial_source = 'assign' AND s.state = 'issued' AND NOT EXISTS (
		SELECT 1 FROM serials t WHERE t.brand = s.brand AND t.model = s.model AND t.device_key_id = s.device_key_id
		AND t.state = 'issued' AND (t.updated_us > s.updated_us OR (t.updated_us = s.updated_us AND t.serial > s.serial)));
CREATE TABLE rekey_grants (
	brand         TEXT NOT NULL,
	model         TEXT NOT NULL,
	serial        TEXT NOT NULL,
	device_key_id TEXT NOT NULL,                                       -- the new device key the serial may move to
	proposal_id   TEXT NOT NULL,
	expires_us    BIGINT NOT NULL,
	PRIMARY KEY (brand, model, serial)
);
`,
		// 5: model assertions only from officer-approved templates, and the
		// assertions signed by an assertion.sign ceremony.
		`
CREATE TABLE model_templates (
	brand         TEXT NOT NULL,
	model         TEXT NOT NULL,
	headers       TEXT NOT NULL,       -- JSON object: the approved statement's headers, exactly
	body          TEXT NOT NULL DEFAULT '',
	proposal_id   TEXT NOT NULL,       -- the model.template proposal that approved them
	last_revision BIGINT NOT NULL DEFAULT 0, -- the highest revision signed from any template of this model
	created_us    BIGINT NOT NULL,
	updated_us    BIGINT NOT NULL,
	PRIMARY KEY (brand, model)
);
CREATE TABLE signed_assertions (
	proposal_id TEXT PRIMARY KEY,      -- the assertion.sign proposal
	assertion   BLOB NOT NULL,
	created_us  BIGINT NOT NULL
);
`,
		// 6: two kinds of API client, never mixed: device-service clients
		// (request-id and serial; their key is in every gadget image, so
		// public) and signing clients (model, system-user, preseed; a
		// secret, with an optional bound TLS client certificate and limits
		// on system-user and preseed). Existing clients: one with serial
		// among its types becomes device-service and keeps only serial. A
		// mixed client's key is the one a gadget carries, so it must be
		// taken for public: devices in the field keep registering with it,
		// and whatever else it signed needs a new signing client. A client
		// without serial becomes a signing client with the default limits
		// (its models, a year, SSH keys only, serials required), which
		// officers widen with a client.limits ceremony.
		`
ALTER TABLE clients ADD COLUMN kind TEXT NOT NULL DEFAULT '';         -- device-service | signing
ALTER TABLE clients ADD COLUMN cert_sha256 TEXT NOT NULL DEFAULT '';  -- signing: the TLS client certificate bound at creation, if any
ALTER TABLE clients ADD COLUMN limits TEXT NOT NULL DEFAULT '';       -- signing: JSON limits on system-user and preseed
UPDATE clients SET kind = CASE WHEN types LIKE '%"serial"%' THEN 'device-service' ELSE 'signing' END;
UPDATE clients SET types = '["serial"]' WHERE kind = 'device-service';
UPDATE clients SET limits = '{"models":' || models || ',"max-validity-days":365,"password":false,"ssh-keys":true,"serials-required":true}'
	WHERE kind = 'signing';
`,
		// 7: the audit chain anchored in the token: each appliance's audit
		// key (public half; the private half never leaves the token), and
		// the checkpoints signed with them. Both are also audit events, so
		// the chain covers them; these tables are what the API serves
		// without walking the chain.
		`
CREATE TABLE audit_keys (
	fingerprint  TEXT PRIMARY KEY,     -- SHA-256 of the PKIX DER, hex
	public_key   BLOB NOT NULL,        -- PKIX DER
	token_serial TEXT NOT NULL,
	event_seq    BIGINT NOT NULL,      -- the audit-key.generate event
	created_us   BIGINT NOT NULL
);
CREATE TABLE audit_checkpoints (
	seq          INTEGER PRIMARY KEY,  -- the last event covered (the head)
	head         BLOB NOT NULL,        -- that event's hash
	time_us      BIGINT NOT NULL,
	appliance    TEXT NOT NULL,
	prev_seq     BIGINT NOT NULL,      -- the previous checkpoint's head, 0 for the first
	prev_head    BLOB NOT NULL,
	key          TEXT NOT NULL,        -- the audit key's fingerprint
	signature    BLOB NOT NULL,        -- ECDSA P-256 (ASN.1) over SHA-256 of the signed bytes
	event_seq    BIGINT NOT NULL UNIQUE -- the audit.checkpoint event that records it
);
`,
	},
}
