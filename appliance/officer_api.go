package appliance

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/keyrack/keyrack/appliance/keyfile"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/hsm/keywrap"
)

func (s *Server) officerRoutes(e *echo.Echo) {
	e.GET("/v1/import-key", s.getImportKey)
	// The officer middleware goes on each route: on a group, echo would
	// also answer unknown /v1 paths with 401 instead of 404.
	officer := func(method, path string, h echo.HandlerFunc) {
		e.Add(method, "/v1"+path, h, s.requireOfficer)
	}
	officer(http.MethodGet, "/keys", s.listKeys)
	officer(http.MethodGet, "/keys/:name", s.getKey)
	officer(http.MethodPost, "/keys/generate", s.proposeGenerate)
	officer(http.MethodPost, "/keys/import", s.proposeImport)
	officer(http.MethodPost, "/keys/upload", s.proposeUpload)
	officer(http.MethodPost, "/keys/:name/disable", s.proposeKeyChange(KindKeyDisable))
	officer(http.MethodPost, "/keys/:name/enable", s.proposeKeyChange(KindKeyEnable))
	officer(http.MethodPost, "/keys/:name/destroy", s.proposeKeyChange(KindKeyDestroy))
	officer(http.MethodPost, "/keys/:name/replicate", s.proposeReplicate)
	officer(http.MethodGet, "/proposals", s.listProposals)
	officer(http.MethodGet, "/proposals/:id", s.getProposal)
	officer(http.MethodPost, "/proposals/:id/approve", s.approveProposal)
	officer(http.MethodPost, "/proposals/:id/cancel", s.cancelProposal)
	officer(http.MethodGet, "/officers", s.listOfficers)
	officer(http.MethodPost, "/officers", s.proposeOfficerAdd)
	officer(http.MethodDelete, "/officers/:name", s.proposeOfficerRemove)
	officer(http.MethodGet, "/clients", s.listClients)
	officer(http.MethodPost, "/clients", s.proposeClientCreate)
	officer(http.MethodDelete, "/clients/:name", s.proposeClientRevoke)
	officer(http.MethodGet, "/audit", s.listAudit)
	s.registrationRoutes(officer)
	officer(http.MethodGet, "/models", s.listModels)
	officer(http.MethodPost, "/models", s.proposeModelSet)
	officer(http.MethodGet, "/signing-log", s.signingLog)
}

// decodeJSON reads a JSON request body strictly into v. The body buffer is
// returned so that handlers carrying secrets can zero it.
func decodeJSON(c echo.Context, v any) ([]byte, error) {
	ct := c.Request().Header.Get(echo.HeaderContentType)
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		return nil, &APIError{Status: http.StatusUnsupportedMediaType, Code: "unsupported-media-type",
			Message: "send the request body as Content-Type: application/json"}
	}
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return body, badRequest("invalid-json", "request body: "+err.Error())
	}
	if dec.More() {
		return body, badRequest("invalid-json", "request body: trailing data after the JSON object")
	}
	return body, nil
}

type importKeyBody struct {
	PublicKeyPEM  string `json:"public_key_pem"`
	Fingerprint   string `json:"fingerprint_sha256"`
	Bits          int    `json:"bits"`
	Method        string `json:"method"`
	TokenMethod   string `json:"token_mechanism"`
	WrapStructure string `json:"wrap_structure"`
}

func (s *Server) getImportKey(c echo.Context) error {
	pub := s.importKey.Info().Public
	return writeJSON(c, http.StatusOK, importKeyBody{
		PublicKeyPEM:  importKeyPEM(pub),
		Fingerprint:   importKeyFingerprint(pub),
		Bits:          pub.N.BitLen(),
		Method:        ImportMethod,
		TokenMethod:   s.mod.ImportMethod(),
		WrapStructure: "RSA-OAEP(SHA-1, MGF1-SHA-1)(AES-256 key) || AES-KWP RFC 5649(PKCS#8 RSA private key)",
	})
}

type keyBody struct {
	Name          string          `json:"name"`
	KeyID         string          `json:"sign-key-sha3-384,omitempty"`
	PublicKey     string          `json:"public-key,omitempty"`
	Bits          int             `json:"bits"`
	Roles         json.RawMessage `json:"roles"`
	Origin        string          `json:"origin"`
	State         string          `json:"state"`
	CreatedAt     time.Time       `json:"created-at"`
	AccountKey    bool            `json:"account-key-present"`
	TokenObject   *tokenObject    `json:"token,omitempty"`
	ProposalID    string          `json:"proposal"`
	Constraints   []any           `json:"constraints,omitempty"`
	ModelPatterns []string        `json:"model-patterns,omitempty"`
}

type tokenObject struct {
	Present          bool   `json:"present"`
	Origin           string `json:"origin,omitempty"` // from CKA_LOCAL
	Sensitive        bool   `json:"sensitive"`
	Extractable      bool   `json:"extractable"`
	NeverExtractable bool   `json:"never-extractable"`
	Error            string `json:"error,omitempty"`
}

func (s *Server) keyJSON(c echo.Context, k store.Key, withToken bool) keyBody {
	b := keyBody{Name: k.Name, KeyID: k.KeyID, Bits: k.Bits, Roles: json.RawMessage(k.Roles), Origin: k.Origin,
		State: string(k.State), CreatedAt: k.CreatedAt, AccountKey: len(k.AccountKey) > 0, ProposalID: k.ProposalID}
	if pub, err := x509.ParsePKIXPublicKey(k.PublicKey); err == nil {
		if rp, ok := pub.(*rsa.PublicKey); ok {
			b.PublicKey, _ = snapPublicKey(rp)
		}
	}
	if r, err := parseRoles(json.RawMessage(k.Roles)); err == nil {
		b.Constraints = r.scope.Constraints()
	}
	if withToken && (k.State == store.KeyActive || k.State == store.KeyDisabled) {
		to := &tokenObject{}
		hk, err := s.mod.FindKey(c.Request().Context(), k.CKAID)
		if err != nil {
			to.Error = toAPIError(err).Message
		} else {
			i := hk.Info()
			to.Present, to.Origin, to.Sensitive, to.Extractable, to.NeverExtractable = true, i.Origin(), i.Sensitive, i.Extractable, i.NeverExtractable
		}
		b.TokenObject = to
	}
	return b
}

func (s *Server) listKeys(c echo.Context) error {
	var keys []store.Key
	if err := s.db.View(c.Request().Context(), func(tx *store.Tx) error {
		var err error
		keys, err = tx.ListKeys()
		return err
	}); err != nil {
		return err
	}
	out := make([]keyBody, 0, len(keys))
	for _, k := range keys {
		out = append(out, s.keyJSON(c, k, false))
	}
	return writeJSON(c, http.StatusOK, map[string]any{"keys": out})
}

func (s *Server) getKey(c echo.Context) error {
	var k store.Key
	if err := s.db.View(c.Request().Context(), func(tx *store.Tx) error {
		var err error
		k, err = tx.GetKey(c.Param("name"))
		return err
	}); err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, s.keyJSON(c, k, true))
}

type keyRequest struct {
	Name  string          `json:"name"`
	Roles json.RawMessage `json:"roles"`
	// Blob is the wrapped key (import) and Key the armored OpenPGP or PEM
	// key (upload), both base64 in JSON.
	Blob []byte `json:"blob,omitempty"`
	Key  []byte `json:"key,omitempty"`
}

func (s *Server) proposeGenerate(c echo.Context) error {
	var req keyRequest
	if _, err := decodeJSON(c, &req); err != nil {
		return err
	}
	if req.Blob != nil || req.Key != nil {
		return badRequest("invalid-argument", "generate takes a name and roles only")
	}
	return s.answer(c, func() (Outcome, error) {
		return s.propose(c.Request().Context(), officerOf(c), KindKeyGenerate,
			fmt.Sprintf("generate RSA-4096 key %q in the token with roles %s", req.Name, compactJSON(req.Roles)),
			keyPayload{Name: req.Name, Roles: req.Roles})
	})
}

func (s *Server) proposeImport(c echo.Context) error {
	var req keyRequest
	if _, err := decodeJSON(c, &req); err != nil {
		return err
	}
	if len(req.Blob) == 0 || req.Key != nil {
		return badRequest("invalid-argument", "import takes name, roles and blob (the wrapped key, base64)")
	}
	head := s.importKey.Info().Public.Size()
	if len(req.Blob) < head+24 || (len(req.Blob)-head)%8 != 0 {
		return badRequest("bad-wrapped-key", fmt.Sprintf("blob of %d bytes is not RSA-OAEP(%d bytes) || AES-KWP: wrap it with `keyrack wrap`", len(req.Blob), head))
	}
	sum := sha256.Sum256(req.Blob)
	return s.answer(c, func() (Outcome, error) {
		return s.propose(c.Request().Context(), officerOf(c), KindKeyImport,
			fmt.Sprintf("import wrapped key %q (blob sha256 %s) with roles %s", req.Name, hex.EncodeToString(sum[:8]), compactJSON(req.Roles)),
			keyPayload{Name: req.Name, Roles: req.Roles, Blob: req.Blob, Source: "wrapped"})
	})
}

// proposeUpload takes a plaintext key (Serial Vault style), checks it,
// wraps it to the import key at once and zeroes every plaintext buffer; the
// proposal holds only the wrapped blob, which the token unwraps on approval.
func (s *Server) proposeUpload(c echo.Context) error {
	var req keyRequest
	body, err := decodeJSON(c, &req)
	defer clear(body)
	defer clear(req.Key)
	if err != nil {
		return err
	}
	if len(req.Key) == 0 || req.Blob != nil {
		return badRequest("invalid-argument", "upload takes name, roles and key (the armored OpenPGP secret key or PEM, base64)")
	}
	key, info, err := keyfile.Parse(req.Key, 4096)
	if err != nil {
		return badRequest("bad-key", err.Error())
	}
	der, err := keyfile.PKCS8(key)
	keyfile.Zero(key)
	if err != nil {
		return err
	}
	blob, err := keywrap.Wrap(s.importKey.Info().Public, der)
	clear(der)
	if err != nil {
		return err
	}
	what := info.Format
	if info.Fingerprint != "" {
		what += " " + info.Fingerprint
	}
	return s.answer(c, func() (Outcome, error) {
		return s.propose(c.Request().Context(), officerOf(c), KindKeyImport,
			fmt.Sprintf("import uploaded %s RSA-%d key %q with roles %s", what, info.Bits, req.Name, compactJSON(req.Roles)),
			keyPayload{Name: req.Name, Roles: req.Roles, Blob: blob, Source: "armored-upload", Fingerprint: info.Fingerprint})
	})
}

func (s *Server) proposeKeyChange(kind string) echo.HandlerFunc {
	return func(c echo.Context) error {
		name := c.Param("name")
		return s.answer(c, func() (Outcome, error) {
			return s.propose(c.Request().Context(), officerOf(c), kind, fmt.Sprintf("%s key %q", kind, name), namePayload{Name: name})
		})
	}
}

func (s *Server) proposeOfficerAdd(c echo.Context) error {
	var req namePayload
	if _, err := decodeJSON(c, &req); err != nil {
		return err
	}
	return s.answer(c, func() (Outcome, error) {
		return s.propose(c.Request().Context(), officerOf(c), KindOfficerAdd, fmt.Sprintf("add officer %q", req.Name), req)
	})
}

func (s *Server) proposeOfficerRemove(c echo.Context) error {
	name := c.Param("name")
	return s.answer(c, func() (Outcome, error) {
		return s.propose(c.Request().Context(), officerOf(c), KindOfficerRemove, fmt.Sprintf("remove officer %q", name), namePayload{Name: name})
	})
}

func (s *Server) proposeClientCreate(c echo.Context) error {
	var req clientPayload
	if _, err := decodeJSON(c, &req); err != nil {
		return err
	}
	return s.answer(c, func() (Outcome, error) {
		return s.propose(c.Request().Context(), officerOf(c), KindClientCreate,
			fmt.Sprintf("create API client %q for brand %q, models %v, types %v", req.Name, req.Brand, req.Models, req.Types), req)
	})
}

func (s *Server) proposeClientRevoke(c echo.Context) error {
	name := c.Param("name")
	return s.answer(c, func() (Outcome, error) {
		return s.propose(c.Request().Context(), officerOf(c), KindClientRevoke, fmt.Sprintf("revoke API client %q", name), namePayload{Name: name})
	})
}

func (s *Server) approveProposal(c echo.Context) error {
	return s.answer(c, func() (Outcome, error) {
		return s.approve(c.Request().Context(), officerOf(c), c.Param("id"))
	})
}

func (s *Server) cancelProposal(c echo.Context) error {
	return s.answer(c, func() (Outcome, error) {
		return s.cancel(c.Request().Context(), officerOf(c), c.Param("id"))
	})
}

type proposalBody struct {
	ID        string         `json:"id"`
	Kind      string         `json:"kind"`
	Summary   string         `json:"summary"`
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

// proposalJSON shows what officers approve. A wrapped blob is shown by its
// digest: it is large and only the token can read it.
func (s *Server) proposalJSON(p store.Proposal) proposalBody {
	details := map[string]any{}
	_ = json.Unmarshal([]byte(p.Payload), &details)
	if blob, ok := details["blob"].(string); ok {
		sum := sha256.Sum256([]byte(blob))
		details["blob"] = fmt.Sprintf("%d bytes base64, sha256 %s", len(blob), hex.EncodeToString(sum[:]))
	}
	return proposalBody{ID: p.ID, Kind: p.Kind, Summary: p.Summary, Details: details, Proposer: p.Proposer,
		State: string(p.State), Result: p.Result, Approvals: p.Approvals, Quorum: s.cfg.Officers.Quorum,
		CreatedAt: p.CreatedAt, ExpiresAt: p.ExpiresAt, DecidedAt: p.DecidedAt}
}

// answer runs a ceremony step and answers 202 while approvals are missing,
// 200 once executed (with a new credential, shown this once).
func (s *Server) answer(c echo.Context, step func() (Outcome, error)) error {
	out, err := step()
	if err != nil {
		return err
	}
	body := map[string]any{"proposal": s.proposalJSON(out.Proposal), "executed": out.Executed}
	status := http.StatusAccepted
	if out.Executed {
		status = http.StatusOK
	}
	if out.Proposal.State != store.ProposalPending && !out.Executed {
		status = http.StatusOK
	}
	if out.Credential != "" {
		body["credential"] = out.Credential
		body["credential_note"] = "shown once: keyrack stores only its hash"
		c.Response().Header().Set("Cache-Control", "no-store")
	}
	return writeJSON(c, status, body)
}

func (s *Server) listProposals(c echo.Context) error {
	state := store.ProposalState(c.QueryParam("state"))
	switch state {
	case "", store.ProposalPending, store.ProposalExecuted, store.ProposalFailed, store.ProposalCancelled, store.ProposalExpired:
	default:
		return badRequest("invalid-argument", "state must be pending, executed, failed, cancelled or expired")
	}
	var ps []store.Proposal
	if err := s.db.View(c.Request().Context(), func(tx *store.Tx) error {
		var err error
		ps, err = tx.ListProposals(state, 200)
		return err
	}); err != nil {
		return err
	}
	out := make([]proposalBody, 0, len(ps))
	for _, p := range ps {
		out = append(out, s.proposalJSON(p))
	}
	return writeJSON(c, http.StatusOK, map[string]any{"proposals": out})
}

func (s *Server) getProposal(c echo.Context) error {
	var p store.Proposal
	if err := s.db.View(c.Request().Context(), func(tx *store.Tx) error {
		var err error
		p, err = tx.GetProposal(c.Param("id"))
		return err
	}); err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, s.proposalJSON(p))
}

func (s *Server) listOfficers(c echo.Context) error {
	var os []store.Officer
	if err := s.db.View(c.Request().Context(), func(tx *store.Tx) error {
		var err error
		os, err = tx.ListOfficers()
		return err
	}); err != nil {
		return err
	}
	type officer struct {
		Name      string     `json:"name"`
		CreatedAt time.Time  `json:"created-at"`
		RevokedAt *time.Time `json:"revoked-at,omitempty"`
	}
	out := make([]officer, 0, len(os))
	for _, o := range os {
		out = append(out, officer{o.Name, o.CreatedAt, o.RevokedAt})
	}
	return writeJSON(c, http.StatusOK, map[string]any{"officers": out, "quorum": s.cfg.Officers.Quorum})
}

func (s *Server) listClients(c echo.Context) error {
	var cs []store.Client
	if err := s.db.View(c.Request().Context(), func(tx *store.Tx) error {
		var err error
		cs, err = tx.ListClients()
		return err
	}); err != nil {
		return err
	}
	type client struct {
		Name      string     `json:"name"`
		Brand     string     `json:"brand"`
		Models    []string   `json:"models"`
		Types     []string   `json:"types"`
		CreatedAt time.Time  `json:"created-at"`
		RevokedAt *time.Time `json:"revoked-at,omitempty"`
	}
	out := make([]client, 0, len(cs))
	for _, x := range cs {
		out = append(out, client{x.Name, x.Brand, x.Models, x.Types, x.CreatedAt, x.RevokedAt})
	}
	return writeJSON(c, http.StatusOK, map[string]any{"clients": out})
}

func (s *Server) listAudit(c echo.Context) error {
	after, err := strconv.ParseInt(defaultString(c.QueryParam("after"), "0"), 10, 64)
	if err != nil || after < 0 {
		return badRequest("invalid-argument", "after must be a non-negative event number")
	}
	limit, err := strconv.Atoi(defaultString(c.QueryParam("limit"), "100"))
	if err != nil || limit < 1 || limit > 1000 {
		return badRequest("invalid-argument", "limit must be 1..1000")
	}
	// An officer's copy of the chain must not hold an event a crash could
	// still take back (it would look like tampering later).
	var evs []store.AuditEvent
	if err := s.db.ViewDurable(c.Request().Context(), func(tx *store.Tx) error {
		evs, err = tx.AuditEvents(after, limit)
		return err
	}); err != nil {
		return err
	}
	out := AuditPage{Events: make([]AuditEventView, 0, len(evs))}
	for _, e := range evs {
		out.Events = append(out.Events, AuditEventView{e.Seq, e.Time, e.Actor, e.Action, e.Subject, e.Result, json.RawMessage(e.Details),
			hex.EncodeToString(e.PrevHash), hex.EncodeToString(e.Hash)})
	}
	return writeJSON(c, http.StatusOK, out)
}

// AuditPage is the body of GET /v1/audit, as the API writes it and the
// officers' CLI reads it.
type AuditPage struct {
	Events []AuditEventView `json:"events"`
}

// AuditEventView is one audit event in the API: details as the JSON
// object they are, hashes in hex.
type AuditEventView struct {
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

func defaultString(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func compactJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}
