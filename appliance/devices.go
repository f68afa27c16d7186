package appliance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance/assertion"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/policy"
)

// The device-service protocol snapd speaks (gadget device-service.url
// pointing at /v1/): POST request-id, then POST serial with the
// serial-request and the model.

func (s *Server) deviceRoutes(e *echo.Echo) {
	e.POST("/v1/request-id", s.requestID, s.requireClient)
	// Admission comes first: an overloaded appliance answers at once,
	// before spending anything on the request.
	e.POST("/v1/serial", s.serial, s.admission, s.requireClient)
	e.POST("/v1/model", s.signModel, s.admission, s.requireClient)
	e.POST("/v1/system-user", s.signSystemUser, s.admission, s.requireClient)
	e.POST("/v1/preseed", s.signPreseed, s.admission, s.requireClient)
}

var errOverloaded = &APIError{Status: http.StatusServiceUnavailable, Code: "overloaded", RetryAfter: 1,
	Message: "the appliance is signing at its limit; retry shortly"}

// admission bounds the signing queue: a request that finds it full is
// answered 503 + Retry-After at once. A request holds its place until the
// token has answered it (Server.signatureMade) or it ends.
func (s *Server) admission(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		select {
		case s.admit <- struct{}{}:
		default:
			s.metrics.overloaded.Inc()
			return errOverloaded
		}
		p := &admitted{s: s}
		c.Set(admittedKey, p)
		defer p.release()
		return next(c)
	}
}

const admittedKey = "keyrack.admitted"

// admitted is a request's place in the signing queue.
type admitted struct {
	s    *Server
	done bool
}

func (p *admitted) release() {
	if !p.done {
		p.done = true
		<-p.s.admit
	}
}

func (s *Server) requestID(c echo.Context) error {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	id := hex.EncodeToString(b)
	cl := clientOf(c)
	// Unsynced: a request-id lost in a crash is answered "unknown
	// request-id" and snapd asks for a new one.
	err := s.db.UpdateUnsynced(c.Request().Context(), func(tx *store.Tx) error {
		return tx.InsertNonce(id, cl.name, time.Duration(s.cfg.Devices.NonceTTL))
	})
	if err != nil {
		return err
	}
	s.metrics.nonces.WithLabelValues("issued").Inc()
	return writeJSON(c, http.StatusOK, map[string]string{"request-id": id})
}

func nonceError(err error) error {
	switch {
	case errors.Is(err, store.ErrNonceUnknown):
		return badRequest("invalid-request-id", "unknown request-id: ask for one at request-id first")
	case errors.Is(err, store.ErrNonceUsed):
		return &APIError{Status: http.StatusConflict, Code: "request-id-used", Message: "the request-id was already used: ask for a new one"}
	case errors.Is(err, store.ErrNonceExpired):
		return badRequest("request-id-expired", "the request-id has expired: ask for a new one")
	case errors.Is(err, store.ErrNonceClient):
		return &APIError{Status: http.StatusForbidden, Code: "request-id-client", Message: "the request-id was issued to another API client"}
	}
	return err
}

var validSerial = func(s string) error {
	if s == "" || len(s) > 128 || strings.ContainsAny(s, "/\n\r\t ") {
		return badRequest("invalid-serial", fmt.Sprintf("serial %q: 1-128 characters, no spaces or '/'", s))
	}
	return nil
}

// errOnRecord rolls back the fast (unsynced) first transaction of a
// serial request that found its serial on record.
var errOnRecord = errors.New("serial on record")

// serialDecision is what the first transaction of a serial request decided.
type serialDecision struct {
	serial   string
	revision int
	stored   []byte // an identical serial already issued: answer with it
}

func (s *Server) serial(c echo.Context) error {
	ctx := c.Request().Context()
	cl := clientOf(c)
	if mt, _, err := mime.ParseMediaType(c.Request().Header.Get(echo.HeaderContentType)); err != nil || mt != asserts.MediaType {
		return &APIError{Status: http.StatusUnsupportedMediaType, Code: "unsupported-media-type",
			Message: "send the serial-request and model as Content-Type: " + asserts.MediaType}
	}
	ds, err := assertion.ParseDeviceStream(io.LimitReader(c.Request().Body, assertion.MaxStreamBytes+1))
	if err != nil {
		return badRequest("invalid-stream", err.Error())
	}
	req := ds.Request
	brand, model := req.BrandID(), req.Model()
	if err := cl.scope.Check(brand, []string{model}, policy.Serial); err != nil {
		s.metrics.refusals.WithLabelValues(refusalRule(err)).Inc()
		return err
	}
	if err := s.checkDeviceModel(ctx, ds.Model, brand, model); err != nil {
		return err
	}
	if err := s.checkRemodel(ctx, cl, ds); err != nil {
		return err
	}
	serial := req.Serial()
	if serial == "" && ds.OldSerial != nil {
		serial = ds.OldSerial.Serial()
	}
	headers := map[string]any{"brand-id": brand, "model": model}
	if serial != "" {
		headers["serial"] = serial
	}
	k, mc, err := s.keyFor(ctx, brand, model, policy.Serial, headers)
	if err != nil {
		return err
	}
	switch {
	case mc.SerialSource == "assign" && req.Serial() != "":
		return badRequest("serial-assigned", fmt.Sprintf("serials of model %s/%s are assigned by the appliance; send the request without a serial", brand, model))
	case mc.SerialSource != "assign" && serial == "":
		return badRequest("no-serial", fmt.Sprintf("model %s/%s takes the serial from the request: set the serial header", brand, model))
	}
	if serial != "" {
		if err := validSerial(serial); err != nil {
			return err
		}
	}
	devKey := req.DeviceKey()
	nonce := req.RequestID()

	// 1. Claim the request-id and decide about the serial, atomically.
	// A new serial is reserved unsynced: if the appliance crashes before
	// step 3 is durable, losing the claim and the reservation loses
	// nothing, since no signature has left, and step 3's durable commit
	// makes this one durable first. A serial already on record is decided
	// in a durable transaction instead (the fast one is rolled back whole),
	// since its answer (the stored serial, a refusal) leaves at once.
	var d serialDecision
	var refusal error
	decide := func(tx *store.Tx, fast bool) error {
		if err := tx.ClaimNonce(nonce, cl.name); err != nil {
			return nonceError(err)
		}
		d = serialDecision{serial: serial}
		if d.serial == "" {
			n, err := tx.NextSerial(brand, model)
			if err != nil {
				return err
			}
			d.serial = mc.SerialPrefix + strconv.FormatInt(n, 10)
		}
		rec := store.SerialRecord{Brand: brand, Model: model, Serial: d.serial, DeviceKeyID: devKey.ID(), Client: cl.name, Nonce: nonce}
		err := tx.ReserveSerial(rec)
		if !errors.Is(err, store.ErrExists) {
			return err
		}
		if fast {
			return errOnRecord
		}
		old, err := tx.GetSerial(brand, model, d.serial)
		if err != nil {
			return err
		}
		subject := brand + "/" + model + "/" + d.serial
		sameKey := old.DeviceKeyID == devKey.ID()
		switch {
		case !sameKey && !mc.AllowRekey:
			s.metrics.duplicates.Inc()
			refusal = &APIError{Status: http.StatusConflict, Code: "serial-taken",
				Message: fmt.Sprintf("serial %s of model %s/%s is registered to another device key", d.serial, brand, model)}
		case old.State == "signing":
			refusal = &APIError{Status: http.StatusServiceUnavailable, Code: "in-progress", RetryAfter: 2,
				Message: "this serial is being signed for another request; retry"}
		case sameKey:
			d.stored = old.Assertion
			if err := tx.ConsumeNonce(nonce); err != nil {
				return err
			}
			_, err = tx.Audit("client:"+cl.name, "serial.duplicate", subject, "returned the stored serial (same device key)", map[string]any{"revision": old.Revision})
			return err
		default:
			d.revision = old.Revision + 1
			rec.Revision = d.revision
			if err := tx.RekeySerial(rec, old.Revision); err != nil {
				return err
			}
			_, err = tx.Audit("client:"+cl.name, "serial.rekey", subject, "ok", map[string]any{"revision": d.revision,
				"old_device_key_id": old.DeviceKeyID, "device_key_id": devKey.ID()})
			return err
		}
		// A refusal is itself a decision to record, with the request-id
		// used up.
		if err := tx.ConsumeNonce(nonce); err != nil {
			return err
		}
		_, err = tx.Audit("client:"+cl.name, "serial.duplicate", subject, "refused: "+toAPIError(refusal).Message, map[string]any{"device_key_id": devKey.ID()})
		return err
	}
	err = s.db.UpdateUnsynced(ctx, func(tx *store.Tx) error { return decide(tx, true) })
	if errors.Is(err, errOnRecord) {
		err = s.db.Update(ctx, func(tx *store.Tx) error { return decide(tx, false) })
	}
	if err != nil {
		return err
	}
	if refusal != nil {
		return refusal
	}
	if d.stored != nil {
		a, err := asserts.Decode(d.stored)
		if err != nil {
			return err
		}
		return s.answerSerial(c, k, a)
	}

	// 2. The token.
	signed, err := k.signer.Serial(assertion.Serial{BrandID: brand, Model: model, Serial: d.serial, DeviceKey: devKey,
		Timestamp: time.Now(), Revision: d.revision, Body: req.Body()})
	s.signatureMade(c, policy.Serial, k.rec.KeyID, err)
	if err != nil {
		s.releaseSerial(ctx, cl.name, brand, model, d.serial, nonce, nil, err)
		return err
	}
	// 3. The record, the signing log and the audit event, together.
	err = s.db.Update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		if err := tx.IssueSerial(brand, model, d.serial, nonce, signed.Bytes); err != nil {
			return err
		}
		if err := tx.ConsumeNonce(nonce); err != nil {
			return err
		}
		return s.logAndAudit(tx, cl.name, policy.Serial, k, store.LogEntry{Brand: brand, Model: model, Serial: d.serial,
			DeviceKeyID: devKey.ID(), Revision: d.revision}, signed.Bytes, map[string]any{"remodel": ds.OldSerial != nil})
	})
	if err != nil {
		// Not recorded, so not released.
		s.releaseSerial(ctx, cl.name, brand, model, d.serial, nonce, signed.Bytes, err)
		return err
	}
	s.metrics.nonces.WithLabelValues("consumed").Inc()
	return s.answerSerial(c, k, signed.Assertion)
}

// releaseSerial undoes a reservation after a failure, so the device can
// retry with a new request-id. signed is the signature made and not
// released, if the token made one: the audit event keeps its digest.
func (s *Server) releaseSerial(ctx context.Context, client, brand, model, serial, nonce string, signed []byte, cause error) {
	var details any // nil: the event's details are {}
	if signed != nil {
		details = map[string]any{"digest": digest(signed)}
	}
	err := s.db.Update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		if err := tx.DropSerialReservation(brand, model, serial, nonce); err != nil {
			return err
		}
		_, err := tx.Audit("client:"+client, "serial.sign", brand+"/"+model+"/"+serial, failureOutcome(cause), details)
		return err
	})
	if err != nil {
		s.log.Error("releasing a serial reservation", "serial", serial, "err", err)
	}
}

// answerSerial sends the serial; with the serial-stream capability also
// the signing key's account-key when the appliance has it.
func (s *Server) answerSerial(c echo.Context, k *signingKey, serial asserts.Assertion) error {
	as := []asserts.Assertion{serial}
	if strings.Contains(c.Request().Header.Get("Snap-Device-Capabilities"), "serial-stream") && len(k.rec.AccountKey) > 0 {
		if ak, err := asserts.Decode(k.rec.AccountKey); err == nil {
			as = append(as, ak)
		}
	}
	return writeAssertions(c, as...)
}

// checkDeviceModel checks the model a device sent: it must be the model of
// the request and, when signed by a key this appliance holds, verify.
// Every device of a model sends the same model assertion, so a verified
// one is remembered by its digest and not verified again.
func (s *Server) checkDeviceModel(ctx context.Context, m *asserts.Model, brand, model string) error {
	content, sig := m.Signature()
	id := digest(append(append(append([]byte{}, content...), 0), sig...))
	if s.cache.modelVerified(id) {
		if err := assertion.CheckModel(m, brand, model); err != nil {
			return badRequest("invalid-model", err.Error())
		}
		return nil
	}
	var known []asserts.PublicKey
	err := s.db.View(ctx, func(tx *store.Tx) error {
		k, err := tx.GetKeyByKeyID(m.SignKeyID())
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		pub, err := publicKeyOf(k)
		if err != nil {
			return err
		}
		known = append(known, asserts.RSAPublicKey(pub))
		return nil
	})
	if err != nil {
		return err
	}
	if err := assertion.CheckModel(m, brand, model, known...); err != nil {
		return badRequest("invalid-model", err.Error())
	}
	if len(known) > 0 {
		s.cache.rememberModel(id)
	}
	return nil
}

// checkRemodel checks a remodel request: the old serial must be one this
// appliance signed, for the original-* headers and the same device key,
// and the client must be scoped to the original model too.
func (s *Server) checkRemodel(ctx context.Context, cl *authedClient, ds *assertion.DeviceStream) error {
	req := ds.Request
	ob, om, os := req.HeaderString("original-brand-id"), req.HeaderString("original-model"), req.HeaderString("original-serial")
	if ob == "" && om == "" && os == "" && ds.OldSerial == nil {
		return nil
	}
	old := ds.OldSerial
	if old == nil || ob == "" || om == "" || os == "" {
		return badRequest("invalid-remodel", "a remodel needs original-brand-id, original-model, original-serial and the current serial assertion")
	}
	if old.BrandID() != ob || old.Model() != om || old.Serial() != os {
		return badRequest("invalid-remodel", "the serial sent does not match the original-* headers")
	}
	if old.DeviceKey().ID() != req.DeviceKey().ID() {
		return badRequest("invalid-remodel", "the current serial belongs to another device key")
	}
	if err := cl.scope.Check(ob, []string{om}, policy.Serial); err != nil {
		return err
	}
	var k store.Key
	err := s.db.View(ctx, func(tx *store.Tx) error {
		var err error
		k, err = tx.GetKeyByKeyID(old.SignKeyID())
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return badRequest("invalid-remodel", "the current serial was not signed by a key of this appliance")
	}
	if err != nil {
		return err
	}
	pub, err := publicKeyOf(k)
	if err != nil {
		return err
	}
	if err := asserts.SignatureCheck(old, asserts.RSAPublicKey(pub)); err != nil {
		return badRequest("invalid-remodel", "the current serial's signature does not verify")
	}
	return nil
}
