package appliance

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance/assertion"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/hsm"
)

// Registration of a key with the Brand Store: the appliance gives what a
// brand owner submits (the account-key-request, self-signed by the key,
// which is `snap export-key --account=ID NAME`; the public key in the
// encoding `snap export-key NAME` prints; the constraints for a scoped
// key) and takes back the account-key assertion the store issued.

func (s *Server) registrationRoutes(officer func(method, path string, h echo.HandlerFunc)) {
	officer(http.MethodGet, "/keys/:name/export", s.exportKey)
	officer(http.MethodPut, "/keys/:name/account-key", s.putAccountKey)
}

// activeKey returns the record and token key of an active key.
func (s *Server) activeKey(c echo.Context, name string) (store.Key, *hsm.Key, error) {
	var k store.Key
	if err := s.db.View(c.Request().Context(), func(tx *store.Tx) error {
		var err error
		k, err = tx.GetKey(name)
		return err
	}); err != nil {
		return store.Key{}, nil, err
	}
	if k.State != store.KeyActive {
		return store.Key{}, nil, &APIError{Status: http.StatusConflict, Code: "key-state",
			Message: fmt.Sprintf("key %q is %s", name, k.State)}
	}
	hk, err := s.mod.FindKey(c.Request().Context(), k.CKAID)
	if err != nil {
		return store.Key{}, nil, err
	}
	return k, hk, nil
}

func (s *Server) exportKey(c echo.Context) error {
	name := c.Param("name")
	account := c.QueryParam("account-id")
	if account == "" {
		return badRequest("invalid-argument", "account-id (the brand account the key is registered to) is required")
	}
	k, hk, err := s.activeKey(c, name)
	if err != nil {
		return err
	}
	signer, err := assertion.NewSigner(hk.WithContext(c.Request().Context()))
	if err != nil {
		return err
	}
	akr, err := signer.AccountKeyRequest(account, name, time.Now(), nil)
	if err != nil {
		return badRequest("invalid-argument", err.Error())
	}
	pub, err := assertion.EncodePublicKey(hk.Info().Public)
	if err != nil {
		return err
	}
	r, err := parseRoles(json.RawMessage(k.Roles))
	if err != nil {
		return err
	}
	// Audited even if the officer has gone away meanwhile: the token
	// made the signature.
	err = s.db.Update(context.WithoutCancel(c.Request().Context()), func(tx *store.Tx) error {
		_, err := tx.Audit("officer:"+officerOf(c), "key.export", name, "ok", map[string]any{"account-id": account, "key_id": k.KeyID})
		return err
	})
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, map[string]any{
		"sign-key-sha3-384":   k.KeyID,
		"account-key-request": string(akr.Bytes),
		"public-key":          base64.StdEncoding.EncodeToString(pub),
		"constraints":         r.scope.Constraints(),
		"note":                "register with the Brand Store: account-key-request as `snap export-key --account` gives it; for a scoped key, the support request carries public-key and the model constraints",
	})
}

// putAccountKey takes the Brand Store's account-key assertion for a key.
// It must be for this key's public key, and its constraints may not be
// wider than the key's local roles (which stay in force either way).
func (s *Server) putAccountKey(c echo.Context) error {
	name := c.Param("name")
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return err
	}
	a, err := asserts.Decode(body)
	if err != nil {
		return badRequest("bad-assertion", "not an assertion: "+err.Error())
	}
	ak, ok := a.(*asserts.AccountKey)
	if !ok {
		return badRequest("bad-assertion", "expected an account-key assertion, got "+a.Type().Name)
	}
	k, hk, err := s.activeKey(c, name)
	if err != nil {
		return err
	}
	if ak.PublicKeyID() != k.KeyID {
		return badRequest("wrong-key", fmt.Sprintf("the account-key is for key %s, not %q (%s)", ak.PublicKeyID(), name, k.KeyID))
	}
	if pub, err := x509.ParsePKIXPublicKey(k.PublicKey); err != nil || pub.(*rsa.PublicKey).N.Cmp(hk.Info().Public.N) != 0 {
		return fmt.Errorf("key %q: record and token disagree on the public key", name)
	}
	r, err := parseRoles(json.RawMessage(k.Roles))
	if err != nil {
		return err
	}
	if err := r.scope.CheckStoreConstraints(ak.Header("constraints")); err != nil {
		return badRequest("constraints-too-wide", err.Error())
	}
	err = s.db.Update(c.Request().Context(), func(tx *store.Tx) error {
		if err := tx.SetAccountKey(name, asserts.Encode(ak)); err != nil {
			return err
		}
		_, err := tx.Audit("officer:"+officerOf(c), "key.account-key", name, "ok",
			map[string]any{"account-id": ak.AccountID(), "key_id": k.KeyID, "constrained": ak.Header("constraints") != nil})
		return err
	})
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, map[string]any{"name": name, "account-key-present": true, "account-id": ak.AccountID()})
}
