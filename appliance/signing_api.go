package appliance

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/csv"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/keyrack/keyrack/appliance/assertion"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/policy"
)

func publicKeyOf(k store.Key) (*rsa.PublicKey, error) {
	pub, err := x509.ParsePKIXPublicKey(k.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("key %q: stored public key: %w", k.Name, err)
	}
	rp, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("key %q is not RSA", k.Name)
	}
	return rp, nil
}

type modelRequest struct {
	Headers map[string]any `json:"headers"`
	Body    string         `json:"body,omitempty"`
}

// signModel signs a model assertion for the client's brand with the key
// bound to the model's "model" role.
func (s *Server) signModel(c echo.Context) error {
	cl := clientOf(c)
	var req modelRequest
	if _, err := decodeJSON(c, &req); err != nil {
		return err
	}
	model, _ := req.Headers["model"].(string)
	if model == "" {
		return badRequest("invalid-headers", "headers.model is required")
	}
	brand := cl.scope.Brand()
	if err := cl.scope.Check(brand, []string{model}, policy.Model); err != nil {
		s.metrics.refusals.WithLabelValues(refusalRule(err)).Inc()
		return err
	}
	k, _, err := s.keyFor(c.Request().Context(), brand, model, policy.Model, map[string]any{"model": model, "brand-id": brand})
	if err != nil {
		return err
	}
	signed, err := k.signer.Model(brand, req.Headers, []byte(req.Body))
	s.signatureMade(c, policy.Model, k.rec.KeyID, err)
	if err != nil {
		return signingError(err, "invalid-headers")
	}
	return s.recordAndAnswer(c, cl.name, policy.Model, k, store.LogEntry{Brand: brand, Model: model}, signed)
}

type systemUserRequest struct {
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

// signSystemUser signs a system-user assertion. Every model it names must
// be in the client's scope and bound to the same system-user key. The
// password is hashed (SHA-512 crypt) and kept nowhere.
func (s *Server) signSystemUser(c echo.Context) error {
	cl := clientOf(c)
	var req systemUserRequest
	body, err := decodeJSON(c, &req)
	defer clear(body)
	if err != nil {
		return err
	}
	if len(req.Models) == 0 {
		return badRequest("invalid-argument", "models is required: a system-user for every model of the brand is not issued here")
	}
	brand := cl.scope.Brand()
	if err := cl.scope.Check(brand, req.Models, policy.SystemUser); err != nil {
		s.metrics.refusals.WithLabelValues(refusalRule(err)).Inc()
		return err
	}
	models := make([]any, len(req.Models))
	for i, m := range req.Models {
		models[i] = m
	}
	var k *signingKey
	for _, m := range req.Models {
		km, _, err := s.keyFor(c.Request().Context(), brand, m, policy.SystemUser, map[string]any{"models": models, "brand-id": brand})
		if err != nil {
			return err
		}
		if k != nil && km.rec.Name != k.rec.Name {
			return badRequest("mixed-keys", "the models are bound to different system-user keys: ask for one assertion per key")
		}
		k = km
	}
	if req.Since.IsZero() {
		req.Since = time.Now().UTC()
	}
	signed, err := k.signer.SystemUser(assertion.SystemUser{BrandID: brand, Email: req.Email, Username: req.Username, Name: req.Name,
		Models: req.Models, Serials: req.Serials, Password: req.Password, SSHKeys: req.SSHKeys, Since: req.Since, Until: req.Until})
	req.Password = ""
	s.signatureMade(c, policy.SystemUser, k.rec.KeyID, err)
	if err != nil {
		return signingError(err, "invalid-argument")
	}
	return s.recordAndAnswer(c, cl.name, policy.SystemUser, k, store.LogEntry{Brand: brand, Model: joinModels(req.Models)}, signed)
}

type preseedRequest struct {
	Model           string `json:"model"`
	SystemLabel     string `json:"system-label"`
	Series          string `json:"series,omitempty"`
	ArtifactSHA3384 string `json:"artifact-sha3-384"`
	Snaps           []struct {
		Name     string `json:"name"`
		ID       string `json:"id,omitempty"`
		Revision int    `json:"revision,omitempty"`
	} `json:"snaps"`
}

func (s *Server) signPreseed(c echo.Context) error {
	cl := clientOf(c)
	var req preseedRequest
	if _, err := decodeJSON(c, &req); err != nil {
		return err
	}
	brand := cl.scope.Brand()
	if err := cl.scope.Check(brand, []string{req.Model}, policy.Preseed); err != nil {
		s.metrics.refusals.WithLabelValues(refusalRule(err)).Inc()
		return err
	}
	k, _, err := s.keyFor(c.Request().Context(), brand, req.Model, policy.Preseed, map[string]any{"model": req.Model, "brand-id": brand})
	if err != nil {
		return err
	}
	in := assertion.Preseed{BrandID: brand, Model: req.Model, SystemLabel: req.SystemLabel, Series: req.Series,
		ArtifactSHA3384: req.ArtifactSHA3384, Timestamp: time.Now()}
	for _, sn := range req.Snaps {
		in.Snaps = append(in.Snaps, assertion.PreseedSnap{Name: sn.Name, ID: sn.ID, Revision: sn.Revision})
	}
	signed, err := k.signer.Preseed(in)
	s.signatureMade(c, policy.Preseed, k.rec.KeyID, err)
	if err != nil {
		return signingError(err, "invalid-argument")
	}
	return s.recordAndAnswer(c, cl.name, policy.Preseed, k, store.LogEntry{Brand: brand, Model: req.Model}, signed)
}

// signingError answers a failed signing: input the assertion package
// refused is the caller's error (400 with code); a token or self-check
// failure is the appliance's, mapped like any other error.
func signingError(err error, code string) error {
	if errors.Is(err, assertion.ErrInvalidHeaders) {
		return badRequest(code, err.Error())
	}
	return err
}

// recordAndAnswer logs a signature durably, then answers with it. The
// record does not depend on the client staying: a signature the token made
// is logged and audited even if the client has gone away meanwhile (as
// serials are), so the signing log and the audit chain account for every
// signature the token made.
func (s *Server) recordAndAnswer(c echo.Context, client string, t policy.AssertionType, k *signingKey, e store.LogEntry, signed assertion.Signed) error {
	ctx := context.WithoutCancel(c.Request().Context())
	err := s.db.Update(ctx, func(tx *store.Tx) error {
		return s.logAndAudit(tx, client, t, k, e, signed.Bytes, nil)
	})
	var d *discarded
	if errors.As(err, &d) {
		// The refusal is itself recorded, with what was signed, in a
		// transaction of its own (the first one was rolled back whole).
		outcome := failureOutcome(d)
		aerr := s.db.Update(ctx, func(tx *store.Tx) error {
			_, err := tx.Audit("client:"+client, string(t)+".sign", e.Brand+"/"+e.Model, outcome,
				map[string]any{"key_id": k.rec.KeyID, "digest": digest(signed.Bytes)})
			return err
		})
		if aerr != nil {
			s.log.Error("auditing a discarded signature", "type", string(t), "err", aerr)
		}
	}
	if err != nil {
		return err
	}
	return writeAssertions(c, signed.Assertion)
}

// signingLog lets officers read the signing log with filters and paging,
// as JSON or CSV.
func (s *Server) signingLog(c echo.Context) error {
	q := c.QueryParams()
	f := store.LogFilter{Type: q.Get("type"), Brand: q.Get("brand"), Model: q.Get("model"), Serial: q.Get("serial"), Client: q.Get("client")}
	var err error
	if v := q.Get("after"); v != "" {
		if f.After, err = strconv.ParseInt(v, 10, 64); err != nil || f.After < 0 {
			return badRequest("invalid-argument", "after must be a log id")
		}
	}
	f.Limit = 1000
	if v := q.Get("limit"); v != "" {
		if f.Limit, err = strconv.Atoi(v); err != nil || f.Limit < 1 || f.Limit > 10000 {
			return badRequest("invalid-argument", "limit must be 1..10000")
		}
	}
	for name, dst := range map[string]*time.Time{"since": &f.Since, "until": &f.Until} {
		if v := q.Get(name); v != "" {
			if *dst, err = time.Parse(time.RFC3339, v); err != nil {
				return badRequest("invalid-argument", name+" must be an RFC 3339 time")
			}
		}
	}
	// What officers read of the log holds for good (see store.DB.ViewDurable).
	var rows []store.LogEntry
	if err := s.db.ViewDurable(c.Request().Context(), func(tx *store.Tx) error {
		rows, err = tx.SigningLog(f)
		return err
	}); err != nil {
		return err
	}
	if q.Get("format") != "csv" {
		if rows == nil {
			rows = []store.LogEntry{}
		}
		return writeJSON(c, http.StatusOK, map[string]any{"entries": rows})
	}
	c.Response().Header().Set(echo.HeaderContentType, "text/csv")
	c.Response().Header().Set("Content-Disposition", `attachment; filename="signing-log.csv"`)
	c.Response().WriteHeader(http.StatusOK)
	w := csv.NewWriter(c.Response())
	w.Write([]string{"id", "time", "type", "key_id", "brand", "model", "serial", "device_key_id", "client", "revision", "digest"})
	for _, e := range rows {
		w.Write([]string{strconv.FormatInt(e.ID, 10), e.Time.Format(time.RFC3339Nano), e.Type, e.KeyID, e.Brand, e.Model,
			e.Serial, e.DeviceKeyID, e.Client, strconv.Itoa(e.Revision), e.Digest})
	}
	w.Flush()
	return w.Error()
}
