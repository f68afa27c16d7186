package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"time"

	"github.com/snapcore/snapd/asserts"

	"github.com/keyrack/keyrack/appliance/assertion"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/policy"
)

// The device-service protocol snapd speaks (gadget device-service.url
// pointing at /v1/): POST request-id, then POST serial with the
// serial-request and the model.

// IssueRequestID gives a device a single-use request-id bound to its API
// client, for one serial request within devices.nonce_ttl. Nothing is
// stored: the request-id carries its expiry and a MAC (see requestid.go).
func (a *Appliance) IssueRequestID(ctx context.Context, cl *Client) (string, error) {
	// A request-id from an appliance whose store has failed could never
	// be used: say so now (503, which snapd retries).
	if err := a.db.Err(); err != nil {
		return "", err
	}
	id, err := a.newRequestID(cl.name, time.Now().Add(time.Duration(a.cfg.Devices.NonceTTL)))
	if err != nil {
		return "", err
	}
	a.metrics.nonces.WithLabelValues("issued").Inc()
	return id, nil
}

func nonceError(err error) error {
	switch {
	case errors.Is(err, errRequestIDInvalid):
		return badInput("invalid-request-id", "unknown request-id (not issued by this appliance to this API client): ask for one at request-id first")
	case errors.Is(err, store.ErrNonceUsed):
		return &Error{Kind: Conflict, Code: "request-id-used", Message: "the request-id was already used: ask for a new one"}
	case errors.Is(err, errRequestIDExpired):
		return badInput("request-id-expired", "the request-id has expired: ask for a new one")
	}
	return err
}

func nonceRefusal(err error) string {
	if errors.Is(err, errRequestIDExpired) {
		return "expired"
	}
	return "invalid"
}

// serialPattern is the serials the appliance signs: letters, digits and
// . _ : -, starting with a letter or a digit, 128 characters at most. A
// serial a device chooses reaches officers' spreadsheets through the
// signing log's CSV export, so nothing may start with a character a
// spreadsheet takes for a formula (= + - @).
var serialPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

func validSerial(s string) error {
	if !serialPattern.MatchString(s) {
		return badInput("invalid-serial", fmt.Sprintf("serial %q: 1-128 characters of A-Z a-z 0-9 . _ : -, starting with a letter or a digit", s))
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
	rekeyBy  string // a re-key: what allowed it
}

// SerialRequest is a device's request for its serial.
type SerialRequest struct {
	// Stream is what the device sent: its serial-request, self-signed by
	// the device key, the model assertion and, for a remodel, the current
	// serial.
	Stream io.Reader
	// SerialStream says the device takes an assertion stream back
	// (snapd's serial-stream capability): the answer then also carries
	// the signing key's account-key when the appliance holds it.
	SerialStream bool
}

// serialJob is a serial request that passed every check before the store:
// what to sign, with which key, and what decides the serial.
type serialJob struct {
	client       string
	ds           *assertion.DeviceStream
	brand, model string
	serial       string // "" when the appliance assigns it
	nonceExpires time.Time
	rekeyFrom    string // the old device key that signed a re-key proof
	mc           store.ModelConfig
	key          *signingKey
}

// IssueSerial decides a device's serial request and, if it is granted,
// has the token sign the serial. The signature leaves (is returned) only
// after its record, signing-log row and audit event are durable. The
// answer is the serial, or the serial on record for the same device key,
// followed by the account-key where sr.SerialStream asks for it.
func (a *Appliance) IssueSerial(ctx context.Context, cl *Client, sr SerialRequest) ([]asserts.Assertion, error) {
	job, err := a.checkSerialRequest(ctx, cl, sr.Stream)
	if err != nil {
		return nil, err
	}
	d, err := a.decideSerial(ctx, job)
	if err != nil {
		return nil, err
	}
	if d.stored != nil {
		stored, err := asserts.Decode(d.stored)
		if err != nil {
			return nil, err
		}
		return serialAnswer(job.key, stored, sr.SerialStream), nil
	}
	signed, err := a.signSerial(ctx, job, d)
	if err != nil {
		return nil, err
	}
	return serialAnswer(job.key, signed, sr.SerialStream), nil
}

// checkSerialRequest parses a device's stream and checks it against the
// client's scope, the model, a remodel's current serial, the key bound to
// the model and the model's serial source.
func (a *Appliance) checkSerialRequest(ctx context.Context, cl *Client, stream io.Reader) (*serialJob, error) {
	ds, err := assertion.ParseDeviceStream(io.LimitReader(stream, assertion.MaxStreamBytes+1))
	if err != nil {
		return nil, badInput("invalid-stream", err.Error())
	}
	req := ds.Request
	nonceExpires, err := a.checkRequestID(cl.name, req.RequestID(), time.Now())
	if err != nil {
		a.metrics.nonces.WithLabelValues(nonceRefusal(err)).Inc()
		return nil, nonceError(err)
	}
	brand, model := req.BrandID(), req.Model()
	if err := cl.scope.Check(brand, []string{model}, policy.Serial); err != nil {
		a.metrics.refusals.WithLabelValues(refusalRule(err)).Inc()
		return nil, err
	}
	if err := a.checkDeviceModel(ctx, ds.Model, brand, model); err != nil {
		return nil, err
	}
	if err := a.checkRemodel(ctx, cl, ds); err != nil {
		return nil, err
	}
	serial := req.Serial()
	if serial == "" && ds.OldSerial != nil {
		serial = ds.OldSerial.Serial()
	}
	headers := map[string]any{"brand-id": brand, "model": model}
	if serial != "" {
		headers["serial"] = serial
	}
	k, mc, err := a.keyFor(ctx, cl.name, brand, model, policy.Serial, headers)
	if err != nil {
		return nil, err
	}
	switch {
	case mc.SerialSource == "assign" && req.Serial() != "":
		return nil, badInput("serial-assigned", fmt.Sprintf("serials of model %s/%s are assigned by the appliance; send the request without a serial", brand, model))
	case mc.SerialSource == "assign":
		// A remodel into a model whose serials the appliance assigns
		// takes that model's next number (or the one this device key
		// already has there): the old model's serial is not in the new
		// model's sequence.
		serial = ""
	case serial == "":
		return nil, badInput("no-serial", fmt.Sprintf("model %s/%s takes the serial from the request: set the serial header", brand, model))
	}
	if serial != "" {
		if err := validSerial(serial); err != nil {
			return nil, err
		}
	}
	job := &serialJob{client: cl.name, ds: ds, brand: brand, model: model, serial: serial, nonceExpires: nonceExpires, mc: mc, key: k}
	if p := ds.RekeyProof; p != nil {
		if p.BrandID() != brand || p.Model() != model || p.Serial() == "" || p.Serial() != serial || p.RequestID() != req.RequestID() ||
			string(p.Body()) != assertion.RekeyProofPrefix+req.DeviceKey().ID() || p.DeviceKey().ID() == req.DeviceKey().ID() {
			return nil, badInput("invalid-rekey-proof", fmt.Sprintf("a re-key proof is a serial-request self-signed by the old device key, "+
				"for the request's brand-id, model, serial and request-id, whose body is %q followed by the new device key's sha3-384", assertion.RekeyProofPrefix))
		}
		job.rekeyFrom = p.DeviceKey().ID()
	}
	return job, nil
}

// decideSerial claims the request-id and decides about the serial,
// atomically. A new serial is reserved unsynced: if the appliance crashes
// before its record is durable, losing the claim and the reservation
// loses nothing, since no signature has left, and the record's durable
// commit makes this one durable first. A serial already on record is
// decided in a durable transaction instead (the fast one is rolled back
// whole), since its answer (the stored serial, a refusal) leaves at once.
func (a *Appliance) decideSerial(ctx context.Context, job *serialJob) (serialDecision, error) {
	req := job.ds.Request
	brand, model, cl, mc := job.brand, job.model, job.client, job.mc
	devKey, nonce := req.DeviceKey(), req.RequestID()
	var d serialDecision
	var refusal error
	decide := func(tx *store.Tx, fast bool) error {
		if err := tx.ClaimNonce(nonce, cl, job.nonceExpires); err != nil {
			if errors.Is(err, store.ErrNonceUsed) {
				a.metrics.nonces.WithLabelValues("reused").Inc()
			}
			return nonceError(err)
		}
		d = serialDecision{serial: job.serial}
		assigned := mc.SerialSource == "assign"
		if assigned {
			held, err := tx.DeviceSerial(brand, model, devKey.ID())
			if err == nil {
				if fast {
					return errOnRecord
				}
				return a.heldSerial(tx, job, held, &d, &refusal)
			}
			if !errors.Is(err, store.ErrNotFound) {
				return err
			}
			n, err := tx.NextSerial(brand, model)
			if err != nil {
				return err
			}
			d.serial = mc.SerialPrefix + strconv.FormatInt(n, 10)
			if err := tx.BindDeviceSerial(brand, model, devKey.ID(), d.serial); errors.Is(err, store.ErrExists) {
				// Another appliance on the store is giving this key its
				// serial right now: roll everything back (the request-id
				// too) and let snapd retry.
				return errInProgress
			} else if err != nil {
				return err
			}
		}
		rec := store.SerialRecord{Brand: brand, Model: model, Serial: d.serial, DeviceKeyID: devKey.ID(), Client: cl, Nonce: nonce}
		err := tx.ReserveSerial(rec)
		if !errors.Is(err, store.ErrExists) {
			return err
		}
		if fast {
			return errOnRecord
		}
		subject := brand + "/" + model + "/" + d.serial
		if assigned {
			// The sequence ran into a serial on record (the sequence or
			// the prefix was changed): this number is used up, and the
			// device's retry takes the next.
			if err := tx.UnbindDeviceSerial(brand, model, devKey.ID()); err != nil {
				return err
			}
			refusal = &Error{Kind: Unavailable, Code: "serial-sequence", RetryAfter: 2 * time.Second,
				Message: fmt.Sprintf("serial %s of model %s/%s, next in its sequence, is already on record; retry for the next one", d.serial, brand, model)}
			return a.recordRefusal(tx, cl, nonce, subject, refusal, devKey.ID())
		}
		old, err := tx.GetSerial(brand, model, d.serial)
		if err != nil {
			return err
		}
		switch {
		case old.State == "signing":
			refusal = errInProgress
		case old.DeviceKeyID == devKey.ID():
			d.stored = old.Assertion
			d.revision = old.Revision
			if err := tx.ConsumeNonce(nonce); err != nil {
				return err
			}
			_, err = tx.Audit("client:"+cl, "serial.duplicate", subject, "returned the stored serial (same device key)", map[string]any{"revision": old.Revision})
			return err
		default:
			by, err := a.rekeyAuthority(tx, job, old)
			if err != nil {
				return err
			}
			if by == nil {
				a.metrics.duplicates.Inc()
				refusal = rekeyRefusal(job, old)
				break
			}
			d.revision = old.Revision + 1
			rec.Revision = d.revision
			if err := tx.RekeySerial(rec, old.Revision); err != nil {
				return err
			}
			by["revision"], by["old_device_key_id"], by["device_key_id"] = d.revision, old.DeviceKeyID, devKey.ID()
			d.rekeyBy = by["by"].(string)
			_, err = tx.Audit("client:"+cl, "serial.rekey", subject, "ok", by)
			return err
		}
		// A refusal is itself a decision to record, with the request-id
		// used up.
		return a.recordRefusal(tx, cl, nonce, subject, refusal, devKey.ID())
	}
	err := a.db.UpdateUnsynced(ctx, func(tx *store.Tx) error { return decide(tx, true) })
	if errors.Is(err, errOnRecord) {
		err = a.db.Update(ctx, func(tx *store.Tx) error { return decide(tx, false) })
	}
	switch {
	case err == nil && refusal != nil:
		err = refusal
	case err == nil && d.stored != nil:
		a.metrics.returned.Inc()
	case err == nil && d.rekeyBy != "":
		a.metrics.rekeys.WithLabelValues(d.rekeyBy).Inc()
	}
	return d, err
}

// errInProgress answers a device whose serial is being signed for another
// of its requests (snapd retries a 503).
var errInProgress = &Error{Kind: Unavailable, Code: "in-progress", RetryAfter: 2 * time.Second,
	Message: "this serial is being signed for another request; retry"}

// recordRefusal uses up the request-id of a refused serial request and
// records the refusal.
func (a *Appliance) recordRefusal(tx *store.Tx, client, nonce, subject string, refusal error, deviceKeyID string) error {
	if err := tx.ConsumeNonce(nonce); err != nil {
		return err
	}
	_, err := tx.Audit("client:"+client, "serial.duplicate", subject, "refused: "+AsError(refusal).Message, map[string]any{"device_key_id": deviceKeyID})
	return err
}

// heldSerial answers a device key that already has its serial in a model
// whose serials the appliance assigns: the stored serial, same revision,
// however often the device asks (snapd retries with the same key and a
// new request-id after a refusal or a lost answer).
func (a *Appliance) heldSerial(tx *store.Tx, job *serialJob, serial string, d *serialDecision, refusal *error) error {
	brand, model, cl, nonce := job.brand, job.model, job.client, job.ds.Request.RequestID()
	subject := brand + "/" + model + "/" + serial
	old, err := tx.GetSerial(brand, model, serial)
	if err != nil {
		// Not %w: a binding without its serial is the store's fault,
		// not the device's (which would read "not found").
		return fmt.Errorf("device key bound to serial %s, which has no record: %v", subject, err)
	}
	d.serial = serial
	if old.State == "signing" {
		*refusal = errInProgress
		return a.recordRefusal(tx, cl, nonce, subject, *refusal, job.ds.Request.DeviceKey().ID())
	}
	d.stored, d.revision = old.Assertion, old.Revision
	if err := tx.ConsumeNonce(nonce); err != nil {
		return err
	}
	_, err = tx.Audit("client:"+cl, "serial.duplicate", subject, "returned the stored serial (same device key)", map[string]any{"revision": old.Revision})
	return err
}

// rekeyAuthority says what lets a serial on record move to the request's
// device key: the old device key's proof, where the model allows re-keys,
// or an officers' grant for exactly that move (used up here). nil: nothing.
func (a *Appliance) rekeyAuthority(tx *store.Tx, job *serialJob, old store.SerialRecord) (map[string]any, error) {
	if job.rekeyFrom != "" && job.rekeyFrom == old.DeviceKeyID && job.mc.AllowRekey {
		return map[string]any{"by": "old-device-key"}, nil
	}
	proposal, err := tx.TakeRekeyGrant(old.Brand, old.Model, old.Serial, job.ds.Request.DeviceKey().ID())
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"by": "officers", "grant": proposal}, nil
}

// rekeyRefusal says why a serial registered to another device key was not
// moved, and what would move it.
func rekeyRefusal(job *serialJob, old store.SerialRecord) error {
	grant := fmt.Sprintf("or officers' approval of this move (keyrack serials rekey %s %s %s -device-key %s)",
		old.Brand, old.Model, old.Serial, job.ds.Request.DeviceKey().ID())
	if !job.mc.AllowRekey {
		return &Error{Kind: Conflict, Code: "serial-taken",
			Message: fmt.Sprintf("serial %s of model %s/%s is registered to another device key; it moves only with officers' approval (keyrack serials rekey %s %s %s -device-key %s)",
				old.Serial, old.Brand, old.Model, old.Brand, old.Model, old.Serial, job.ds.Request.DeviceKey().ID())}
	}
	what := "a re-key proof signed by the device key it is registered to"
	if job.rekeyFrom != "" {
		what = "a re-key proof signed by the device key it is registered to (the one sent is signed by another key)"
	}
	return &Error{Kind: Refused, Code: "rekey-unproven",
		Message: fmt.Sprintf("serial %s of model %s/%s is registered to another device key; moving it needs %s, %s", old.Serial, old.Brand, old.Model, what, grant)}
}

// signSerial has the token sign the serial decided, then records it, its
// signing-log row and its audit event together. A failure of either step
// gives the reservation back.
func (a *Appliance) signSerial(ctx context.Context, job *serialJob, d serialDecision) (asserts.Assertion, error) {
	req, k := job.ds.Request, job.key
	brand, model, cl := job.brand, job.model, job.client
	devKey, nonce := req.DeviceKey(), req.RequestID()
	signed, err := k.signer.Serial(assertion.Serial{BrandID: brand, Model: model, Serial: d.serial, DeviceKey: devKey,
		Timestamp: time.Now(), Revision: d.revision, Body: req.Body()})
	a.signatureMade(ctx, policy.Serial, k.rec.KeyID, err)
	if err != nil {
		a.releaseSerial(ctx, cl, brand, model, d.serial, nonce, nil, err)
		return nil, err
	}
	err = a.db.Update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		if err := tx.IssueSerial(brand, model, d.serial, nonce, signed.Bytes); err != nil {
			return err
		}
		if err := tx.ConsumeNonce(nonce); err != nil {
			return err
		}
		return a.logAndAudit(tx, cl, policy.Serial, k, store.LogEntry{Brand: brand, Model: model, Serial: d.serial,
			DeviceKeyID: devKey.ID(), Revision: d.revision}, signed.Bytes, map[string]any{"remodel": job.ds.OldSerial != nil})
	})
	if err != nil {
		// Not recorded, so not released.
		a.releaseSerial(ctx, cl, brand, model, d.serial, nonce, signed.Bytes, err)
		return nil, err
	}
	a.metrics.nonces.WithLabelValues("consumed").Inc()
	return signed.Assertion, nil
}

// releaseSerial undoes a reservation after a failure, so the device can
// retry with a new request-id. signed is the signature made and not
// released, if the token made one: the audit event keeps its digest.
func (a *Appliance) releaseSerial(ctx context.Context, client, brand, model, serial, nonce string, signed []byte, cause error) {
	var details any // nil: the event's details are {}
	if signed != nil {
		details = map[string]any{"digest": digest(signed)}
	}
	err := a.db.Update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		if err := tx.DropSerialReservation(brand, model, serial, nonce); err != nil {
			return err
		}
		_, err := tx.Audit("client:"+client, "serial.sign", brand+"/"+model+"/"+serial, failureOutcome(cause), details)
		return err
	})
	if err != nil {
		a.log.Error("releasing a serial reservation", "serial", serial, "err", err)
	}
}

// serialAnswer is the serial and, with the serial-stream capability, the
// signing key's account-key when the appliance has it.
func serialAnswer(k *signingKey, serial asserts.Assertion, serialStream bool) []asserts.Assertion {
	as := []asserts.Assertion{serial}
	if serialStream && len(k.rec.AccountKey) > 0 {
		if ak, err := asserts.Decode(k.rec.AccountKey); err == nil {
			as = append(as, ak)
		}
	}
	return as
}

// checkDeviceModel checks the model a device sent: it must be the model of
// the request and, when signed by a key this appliance holds, verify.
// Every device of a model sends the same model assertion, so a verified
// one is remembered by its digest and not verified again.
func (a *Appliance) checkDeviceModel(ctx context.Context, m *asserts.Model, brand, model string) error {
	content, sig := m.Signature()
	id := digest(append(append(append([]byte{}, content...), 0), sig...))
	if a.cache.modelVerified(id) {
		if err := assertion.CheckModel(m, brand, model); err != nil {
			return badInput("invalid-model", err.Error())
		}
		return nil
	}
	var known []asserts.PublicKey
	err := a.db.View(ctx, func(tx *store.Tx) error {
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
		return badInput("invalid-model", err.Error())
	}
	if len(known) > 0 {
		a.cache.rememberModel(id)
	}
	return nil
}

// checkRemodel checks a remodel request: the old serial must be one this
// appliance signed, for the original-* headers and the same device key,
// and the client must be scoped to the original model too.
func (a *Appliance) checkRemodel(ctx context.Context, cl *Client, ds *assertion.DeviceStream) error {
	req := ds.Request
	ob, om, os := req.HeaderString("original-brand-id"), req.HeaderString("original-model"), req.HeaderString("original-serial")
	if ob == "" && om == "" && os == "" && ds.OldSerial == nil {
		return nil
	}
	old := ds.OldSerial
	if old == nil || ob == "" || om == "" || os == "" {
		return badInput("invalid-remodel", "a remodel needs original-brand-id, original-model, original-serial and the current serial assertion")
	}
	if old.BrandID() != ob || old.Model() != om || old.Serial() != os {
		return badInput("invalid-remodel", "the serial sent does not match the original-* headers")
	}
	if old.DeviceKey().ID() != req.DeviceKey().ID() {
		return badInput("invalid-remodel", "the current serial belongs to another device key")
	}
	if err := cl.scope.Check(ob, []string{om}, policy.Serial); err != nil {
		return err
	}
	var k store.Key
	err := a.db.View(ctx, func(tx *store.Tx) error {
		var err error
		k, err = tx.GetKeyByKeyID(old.SignKeyID())
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return badInput("invalid-remodel", "the current serial was not signed by a key of this appliance")
	}
	if err != nil {
		return err
	}
	pub, err := publicKeyOf(k)
	if err != nil {
		return err
	}
	if err := asserts.SignatureCheck(old, asserts.RSAPublicKey(pub)); err != nil {
		return badInput("invalid-remodel", "the current serial's signature does not verify")
	}
	return nil
}
