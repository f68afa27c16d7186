package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/wire"
)

func (s *Server) officerRoutes(e *echo.Echo) {
	e.GET("/v1/import-key", s.getImportKey)
	e.POST("/v1/login/challenge", s.loginChallenge, s.officerChannel)
	e.POST("/v1/login", s.login, s.officerChannel)
	// The officer middleware goes on each route: on a group, echo would
	// also answer unknown /v1 paths with 401 instead of 404.
	officer := func(method, path string, h echo.HandlerFunc) {
		e.Add(method, "/v1"+path, h, s.requireOfficer)
	}
	officer(http.MethodGet, "/keys", s.listKeys)
	officer(http.MethodGet, "/keys/:name", s.getKey)
	officer(http.MethodPost, "/keys/generate", s.proposeKey(s.app.ProposeGenerate))
	officer(http.MethodPost, "/keys/import", s.proposeKey(s.app.ProposeImport))
	officer(http.MethodPost, "/keys/upload", s.proposeUpload)
	officer(http.MethodPost, "/keys/:name/disable", s.proposeKeyChange(appliance.KindKeyDisable))
	officer(http.MethodPost, "/keys/:name/enable", s.proposeKeyChange(appliance.KindKeyEnable))
	officer(http.MethodPost, "/keys/:name/destroy", s.proposeKeyChange(appliance.KindKeyDestroy))
	officer(http.MethodPost, "/keys/:name/replicate", s.proposeReplicate)
	officer(http.MethodPost, "/keys/:name/freeze", s.freezeKey)
	officer(http.MethodGet, "/keys/:name/export", s.exportKey)
	officer(http.MethodPut, "/keys/:name/account-key", s.putAccountKey)
	officer(http.MethodGet, "/proposals", s.listProposals)
	officer(http.MethodGet, "/proposals/:id", s.getProposal)
	officer(http.MethodPost, "/proposals/:id/approve", s.approve)
	officer(http.MethodPost, "/proposals/:id/cancel", s.byID(s.app.Cancel))
	officer(http.MethodGet, "/officers", s.listOfficers)
	officer(http.MethodPost, "/officers", s.proposeOfficer(s.app.ProposeOfficerAdd))
	officer(http.MethodPost, "/officers/rotate", s.proposeOfficer(s.app.ProposeOfficerRotate))
	officer(http.MethodPost, "/quorum", s.proposeQuorum)
	officer(http.MethodPost, "/serials/rekey", s.proposeRekey)
	officer(http.MethodGet, "/backup", s.backup)
	officer(http.MethodDelete, "/officers/:name", s.byName(s.app.ProposeOfficerRemove))
	officer(http.MethodGet, "/clients", s.listClients)
	officer(http.MethodPost, "/clients", s.proposeClientCreate)
	officer(http.MethodDelete, "/clients/:name", s.byName(s.app.ProposeClientRevoke))
	officer(http.MethodPost, "/clients/:name/revoke", s.revokeClient)
	officer(http.MethodPost, "/clients/:name/limits", s.proposeClientLimits)
	officer(http.MethodGet, "/audit", s.listAudit)
	officer(http.MethodGet, "/models", s.listModels)
	officer(http.MethodPost, "/models", s.proposeModelSet)
	officer(http.MethodGet, "/models/templates", s.listTemplates)
	officer(http.MethodPost, "/models/templates", s.proposeTemplate)
	officer(http.MethodPost, "/sign", s.proposeSign)
	officer(http.MethodGet, "/proposals/:id/assertion", s.signedAssertion)
	officer(http.MethodGet, "/signing-log", s.signingLog)
}

// decodeJSON reads a JSON request body strictly into v. The body buffer is
// returned so that handlers carrying secrets can zero it.
func decodeJSON(c echo.Context, v any) ([]byte, error) {
	ct := c.Request().Header.Get(echo.HeaderContentType)
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		return nil, unsupportedMediaType("send the request body as Content-Type: application/json")
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

// answerStep answers a ceremony step: 202 while approvals are missing, 200
// once decided (with a new credential, shown this once).
func answerStep(c echo.Context, out appliance.Outcome, err error) error {
	if err != nil {
		return err
	}
	body := wire.CeremonyAnswer{Proposal: out.Proposal, Executed: out.Executed}
	status := http.StatusAccepted
	if out.Executed || !out.Pending() {
		status = http.StatusOK
	}
	if out.Credential != "" {
		body.Credential = out.Credential
		body.CredentialNote = "shown once: keyrack stores only its hash"
		c.Response().Header().Set("Cache-Control", "no-store")
	}
	return writeJSON(c, status, body)
}

// byID is a ceremony step on the proposal of the :id parameter.
func (s *Server) byID(step func(ctx context.Context, officer, id string) (appliance.Outcome, error)) echo.HandlerFunc {
	return func(c echo.Context) error {
		out, err := step(c.Request().Context(), officerOf(c), c.Param("id"))
		return answerStep(c, out, err)
	}
}

// byName is a proposal about the officer or client of the :name parameter.
func (s *Server) byName(propose func(ctx context.Context, officer, name string) (appliance.Outcome, error)) echo.HandlerFunc {
	return func(c echo.Context) error {
		out, err := propose(c.Request().Context(), officerOf(c), c.Param("name"))
		return answerStep(c, out, err)
	}
}

func (s *Server) getImportKey(c echo.Context) error {
	return writeJSON(c, http.StatusOK, s.app.ImportKey())
}

func (s *Server) listKeys(c echo.Context) error {
	keys, err := s.app.ListKeys(c.Request().Context())
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, wire.KeyList{Keys: keys})
}

func (s *Server) getKey(c echo.Context) error {
	k, err := s.app.GetKey(c.Request().Context(), c.Param("name"))
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, k)
}

// proposeKey proposes a key generated in the token or imported wrapped.
func (s *Server) proposeKey(propose func(ctx context.Context, officer string, req wire.KeyRequest) (appliance.Outcome, error)) echo.HandlerFunc {
	return func(c echo.Context) error {
		var req wire.KeyRequest
		if _, err := decodeJSON(c, &req); err != nil {
			return err
		}
		out, err := propose(c.Request().Context(), officerOf(c), req)
		return answerStep(c, out, err)
	}
}

// proposeUpload takes a plaintext key; the core wraps it at once, and the
// request's plaintext buffers are zeroed here when it is done.
func (s *Server) proposeUpload(c echo.Context) error {
	var req wire.KeyRequest
	body, err := decodeJSON(c, &req)
	defer clear(body)
	defer clear(req.Key)
	if err != nil {
		return err
	}
	out, err := s.app.ProposeUpload(c.Request().Context(), officerOf(c), req)
	return answerStep(c, out, err)
}

func (s *Server) proposeKeyChange(kind string) echo.HandlerFunc {
	return func(c echo.Context) error {
		out, err := s.app.ProposeKeyChange(c.Request().Context(), officerOf(c), kind, c.Param("name"))
		return answerStep(c, out, err)
	}
}

// freezeKey stops a key at once, on one officer's word.
func (s *Server) freezeKey(c echo.Context) error {
	k, err := s.app.FreezeKey(c.Request().Context(), officerOf(c), c.Param("name"))
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, k)
}

// revokeClient revokes an API client at once, on one officer's word.
func (s *Server) revokeClient(c echo.Context) error {
	cl, err := s.app.RevokeClient(c.Request().Context(), officerOf(c), c.Param("name"))
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, cl)
}

func (s *Server) proposeReplicate(c echo.Context) error {
	var req wire.ReplicateRequest
	if _, err := decodeJSON(c, &req); err != nil {
		return err
	}
	out, err := s.app.ProposeReplicate(c.Request().Context(), officerOf(c), c.Param("name"), req)
	return answerStep(c, out, err)
}

func (s *Server) exportKey(c echo.Context) error {
	exp, err := s.app.ExportKey(c.Request().Context(), officerOf(c), c.Param("name"), c.QueryParam("account-id"))
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, exp)
}

func (s *Server) putAccountKey(c echo.Context) error {
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return err
	}
	stored, err := s.app.PutAccountKey(c.Request().Context(), officerOf(c), c.Param("name"), body)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, stored)
}

// proposeOfficer proposes an officer with their key, or a new key.
func (s *Server) proposeOfficer(propose func(ctx context.Context, officer string, req wire.OfficerRequest) (appliance.Outcome, error)) echo.HandlerFunc {
	return func(c echo.Context) error {
		var req wire.OfficerRequest
		if _, err := decodeJSON(c, &req); err != nil {
			return err
		}
		out, err := propose(c.Request().Context(), officerOf(c), req)
		return answerStep(c, out, err)
	}
}

func (s *Server) proposeQuorum(c echo.Context) error {
	var req wire.QuorumRequest
	if _, err := decodeJSON(c, &req); err != nil {
		return err
	}
	out, err := s.app.ProposeQuorum(c.Request().Context(), officerOf(c), req)
	return answerStep(c, out, err)
}

func (s *Server) proposeRekey(c echo.Context) error {
	var req wire.RekeyRequest
	if _, err := decodeJSON(c, &req); err != nil {
		return err
	}
	out, err := s.app.ProposeRekey(c.Request().Context(), officerOf(c), req)
	return answerStep(c, out, err)
}

func (s *Server) approve(c echo.Context) error {
	var req wire.ApproveRequest
	if _, err := decodeJSON(c, &req); err != nil {
		return err
	}
	out, err := s.app.Approve(c.Request().Context(), officerOf(c), c.Param("id"), req)
	return answerStep(c, out, err)
}

// loginChallenge gives an officer a challenge to sign with their key.
func (s *Server) loginChallenge(c echo.Context) error {
	var req wire.LoginRequest
	if _, err := decodeJSON(c, &req); err != nil {
		return err
	}
	ch, err := s.app.LoginChallenge(c.Request().Context(), req, c.RealIP())
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, ch)
}

// login opens an officer session for a signed challenge.
func (s *Server) login(c echo.Context) error {
	var req wire.LoginAnswer
	if _, err := decodeJSON(c, &req); err != nil {
		return err
	}
	sess, err := s.app.Login(c.Request().Context(), req, c.RealIP(), clientCert(c))
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return writeJSON(c, http.StatusOK, sess)
}

func (s *Server) proposeClientCreate(c echo.Context) error {
	var req wire.ClientRequest
	if _, err := decodeJSON(c, &req); err != nil {
		return err
	}
	out, err := s.app.ProposeClientCreate(c.Request().Context(), officerOf(c), req)
	return answerStep(c, out, err)
}

func (s *Server) proposeClientLimits(c echo.Context) error {
	var req wire.ClientLimits
	if _, err := decodeJSON(c, &req); err != nil {
		return err
	}
	out, err := s.app.ProposeClientLimits(c.Request().Context(), officerOf(c), c.Param("name"), req)
	return answerStep(c, out, err)
}

func (s *Server) proposeModelSet(c echo.Context) error {
	var req wire.ModelBinding
	if _, err := decodeJSON(c, &req); err != nil {
		return err
	}
	out, err := s.app.ProposeModelSet(c.Request().Context(), officerOf(c), req)
	return answerStep(c, out, err)
}

func (s *Server) listProposals(c echo.Context) error {
	ps, err := s.app.ListProposals(c.Request().Context(), c.QueryParam("state"))
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, wire.ProposalList{Proposals: ps})
}

func (s *Server) getProposal(c echo.Context) error {
	p, err := s.app.GetProposal(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, p)
}

func (s *Server) listOfficers(c echo.Context) error {
	os, err := s.app.ListOfficers(c.Request().Context())
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, os)
}

func (s *Server) listClients(c echo.Context) error {
	cs, err := s.app.ListClients(c.Request().Context())
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, wire.ClientList{Clients: cs})
}

func (s *Server) listModels(c echo.Context) error {
	ms, err := s.app.ListModels(c.Request().Context())
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, wire.ModelList{Models: ms})
}

func defaultString(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
