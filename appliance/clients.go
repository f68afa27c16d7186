package appliance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
	"github.com/keyrack/keyrack/policy"
)

// API clients come in two kinds that never mix (policy.ClientKind):
// device-service clients, whose key is in every gadget image, obtain
// request-ids and serials; signing clients, whose key is a secret, obtain
// model, system-user and preseed assertions within limits officers set.

// KindClientLimits is the ceremony that changes a signing client's limits.
const KindClientLimits = "client.limits"

// limitsPayload is a signing client's limits as proposals and the store
// keep them: every field explicit, so that what officers approved is what
// applies, whatever later versions take as defaults.
type limitsPayload struct {
	Models          []string `json:"models"`
	MaxValidityDays int      `json:"max-validity-days"`
	Password        bool     `json:"password"`
	SSHKeys         bool     `json:"ssh-keys"`
	SerialsRequired bool     `json:"serials-required"`
}

// clientLimitsPayload is the payload of client.limits.
type clientLimitsPayload struct {
	Name   string        `json:"name"`
	Limits limitsPayload `json:"limits"`
}

const day = 24 * time.Hour

func defaultLimits(models []string) limitsPayload {
	d := policy.DefaultLimits(models)
	return limitsPayload{Models: d.Models, MaxValidityDays: int(d.MaxValidity / day), Password: d.Password,
		SSHKeys: d.SSHKeys, SerialsRequired: d.SerialsRequired}
}

func (l limitsPayload) policy() policy.Limits {
	return policy.Limits{Models: slices.Clone(l.Models), MaxValidity: time.Duration(l.MaxValidityDays) * day,
		Password: l.Password, SSHKeys: l.SSHKeys, SerialsRequired: l.SerialsRequired}
}

// with is l changed by the fields w sets.
func (l limitsPayload) with(w *wire.ClientLimits) limitsPayload {
	if w == nil {
		return l
	}
	if len(w.Models) > 0 {
		l.Models = slices.Compact(slices.Sorted(slices.Values(w.Models)))
	}
	if w.MaxValidityDays != 0 {
		l.MaxValidityDays = w.MaxValidityDays
	}
	for _, f := range []struct {
		set *bool
		to  *bool
	}{{w.Password, &l.Password}, {w.SSHKeys, &l.SSHKeys}, {w.SerialsRequired, &l.SerialsRequired}} {
		if f.set != nil {
			*f.to = *f.set
		}
	}
	return l
}

func (l limitsPayload) wire() *wire.ClientLimits {
	return &wire.ClientLimits{Models: slices.Clone(l.Models), MaxValidityDays: l.MaxValidityDays,
		Password: &l.Password, SSHKeys: &l.SSHKeys, SerialsRequired: &l.SerialsRequired}
}

// String is the limits as proposal summaries say them.
func (l limitsPayload) String() string {
	yes := func(b bool, y, n string) string {
		if b {
			return y
		}
		return n
	}
	return fmt.Sprintf("system-user and preseed for %s; a system-user valid for at most %d days, %s, %s, %s",
		strings.Join(l.Models, ", "), l.MaxValidityDays, yes(l.Password, "password allowed", "no password"),
		yes(l.SSHKeys, "SSH keys allowed", "no SSH keys"), yes(l.SerialsRequired, "serials required", "serials optional"))
}

// check validates limits against the client's scope.
func (l limitsPayload) check(scope *policy.ClientScope) error {
	if l.MaxValidityDays < 0 || l.MaxValidityDays > int(policy.MaxMaxValidity/day) {
		return badInput("invalid-limits", fmt.Sprintf("limits: max-validity-days must be between 1 and %d", policy.MaxMaxValidity/day))
	}
	if err := l.policy().Validate(scope); err != nil {
		return badInput("invalid-limits", err.Error())
	}
	return nil
}

// parseStoredLimits reads the limits a client record keeps.
func parseStoredLimits(s string) (limitsPayload, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	var l limitsPayload
	if err := dec.Decode(&l); err != nil {
		return l, fmt.Errorf("client limits on record: %w", err)
	}
	return l, nil
}

// kindOf is the kind of a client.create payload. Proposals made before
// clients had kinds have none: their types say it, and a mix of serial
// with another type is refused when they are carried out.
func (p clientPayload) kindOf() (ClientKind, error) {
	if p.Kind != "" {
		k, err := policy.ParseKind(p.Kind)
		if err != nil {
			return "", badInput("client-kind", err.Error())
		}
		return k, nil
	}
	if len(p.Types) == 0 {
		return "", badInput("client-kind", "kind is required: device-service (serials; its key goes into gadget images and is public) or signing (model, system-user, preseed; a secret)")
	}
	if slices.Contains(p.Types, string(policy.Serial)) {
		return DeviceServiceClient, nil
	}
	return SigningClient, nil
}

// clientPayloadOf turns a request into the payload officers approve, with
// every default made explicit: the kind, a device-service client's type,
// a signing client's limits.
func clientPayloadOf(req wire.ClientRequest) (clientPayload, error) {
	p := clientPayload{Name: req.Name, Brand: req.Brand, Models: req.Models, Types: req.Types, Kind: req.Kind, CertSHA256: req.ClientCertSHA256}
	if p.Kind == "" && len(p.Types) > 0 {
		k, err := p.kindOf()
		if err != nil {
			return p, err
		}
		p.Kind = string(k)
	}
	k, err := p.kindOf()
	if err != nil {
		return p, err
	}
	switch k {
	case DeviceServiceClient:
		if len(p.Types) == 0 {
			p.Types = []string{string(policy.Serial)}
		}
		if req.Limits != nil {
			return p, badInput("client-kind", "a device-service client has no limits: it obtains serials only")
		}
	case SigningClient:
		l := defaultLimits(slices.Compact(slices.Sorted(slices.Values(req.Models)))).with(req.Limits)
		p.Limits = &l
	}
	return p, nil
}

// checkClientPayload validates a client.create payload: name, kind, scope,
// and a signing client's certificate and limits.
func checkClientPayload(p clientPayload) (ClientKind, error) {
	if err := validName("client", p.Name); err != nil {
		return "", err
	}
	k, err := p.kindOf()
	if err != nil {
		return "", err
	}
	scope, err := policy.NewClientScope(p.Brand, p.Models, p.Types)
	if err != nil {
		if errors.Is(err, policy.ErrInvalid) {
			return "", badInput("invalid-scope", err.Error())
		}
		return "", fmt.Errorf("client scope: %w", err)
	}
	if err := policy.CheckKindTypes(k, p.Types); err != nil {
		return "", badInput("client-kind", err.Error())
	}
	switch k {
	case DeviceServiceClient:
		// Devices present no client certificate, and the key is public
		// anyway: a binding would protect nothing.
		if p.CertSHA256 != "" {
			return "", badInput("client-kind", "a device-service client cannot be bound to a client certificate: devices present none, and its key is public anyway")
		}
		if p.Limits != nil {
			return "", badInput("client-kind", "a device-service client has no limits: it obtains serials only")
		}
	case SigningClient:
		if err := validCertSHA256(p.CertSHA256); err != nil {
			return "", err
		}
		// A proposal made before clients had kinds carries no limits:
		// the defaults apply.
		l := defaultLimits(scope.Models())
		if p.Limits != nil {
			l = *p.Limits
		}
		if err := l.check(scope); err != nil {
			return "", err
		}
	}
	return k, nil
}

// storeClient is the record of a client.create payload checked by
// checkClientPayload.
func storeClient(p clientPayload, k ClientKind, secretHash []byte) (store.Client, error) {
	c := store.Client{ID: p.Name, Name: p.Name, Brand: p.Brand, Models: p.Models, Types: p.Types, Kind: string(k),
		CertSHA256: p.CertSHA256, SecretHash: secretHash}
	if k == SigningClient {
		l := defaultLimits(slices.Compact(slices.Sorted(slices.Values(p.Models))))
		if p.Limits != nil {
			l = *p.Limits
		}
		b, err := json.Marshal(l)
		if err != nil {
			return c, err
		}
		c.Limits = string(b)
	}
	return c, nil
}

func clientSummary(p clientPayload) string {
	if p.Kind == string(DeviceServiceClient) {
		return fmt.Sprintf("create device-service client %q for brand %q, models %v: serials only (its key goes into gadget images and is public)",
			p.Name, p.Brand, p.Models)
	}
	s := fmt.Sprintf("create %s client %q for brand %q, models %v, types %v", p.Kind, p.Name, p.Brand, p.Models, p.Types)
	if p.CertSHA256 != "" {
		s += ", bound to the client certificate sha256 " + p.CertSHA256
	}
	if p.Limits != nil {
		s += "; limits: " + p.Limits.String()
	}
	return s
}

// ProposeClientCreate proposes an API client with its kind and scope.
func (a *Appliance) ProposeClientCreate(ctx context.Context, officer string, req wire.ClientRequest) (out Outcome, err error) {
	defer a.auditRefusal(ctx, officer, "proposal.create", KindClientCreate, &err)
	p, err := clientPayloadOf(req)
	if err != nil {
		return Outcome{}, err
	}
	return a.propose(ctx, officer, KindClientCreate, clientSummary(p), p)
}

// ProposeClientLimits proposes new limits for signing client name: the
// fields req sets change, the others stay as they are, and the proposal
// states the whole result.
func (a *Appliance) ProposeClientLimits(ctx context.Context, officer, name string, req wire.ClientLimits) (out Outcome, err error) {
	defer a.auditRefusal(ctx, officer, "proposal.create", KindClientLimits, &err)
	var c store.Client
	if err := a.db.View(ctx, func(tx *store.Tx) error {
		c, err = tx.GetClientByName(name)
		return err
	}); err != nil {
		return Outcome{}, err
	}
	cur, err := signingLimits(c)
	if err != nil {
		return Outcome{}, err
	}
	p := clientLimitsPayload{Name: name, Limits: cur.with(&req)}
	return a.propose(ctx, officer, KindClientLimits, fmt.Sprintf("set the limits of signing client %q: %s", name, p.Limits), p)
}

// signingLimits is the limits of c, which must be an active signing
// client.
func signingLimits(c store.Client) (limitsPayload, error) {
	if c.RevokedAt != nil {
		return limitsPayload{}, conflict("client-revoked", fmt.Sprintf("API client %q is revoked", c.Name))
	}
	if ClientKind(c.Kind) != SigningClient {
		return limitsPayload{}, badInput("client-kind", fmt.Sprintf("%q is a device-service client: it has no limits, it obtains serials only", c.Name))
	}
	return parseStoredLimits(c.Limits)
}

// checkLimitsPayload validates a client.limits payload in tx.
func checkLimitsPayload(tx *store.Tx, raw []byte) (clientLimitsPayload, error) {
	var p clientLimitsPayload
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, err
	}
	c, err := tx.GetClientByName(p.Name)
	if err != nil {
		return p, err
	}
	if _, err := signingLimits(c); err != nil {
		return p, err
	}
	scope, err := policy.NewClientScope(c.Brand, c.Models, c.Types)
	if err != nil {
		return p, err
	}
	return p, p.Limits.check(scope)
}

// executeClientLimits carries out client.limits in tx.
func executeClientLimits(tx *store.Tx, prop store.Proposal) (string, map[string]any, error) {
	p, err := checkLimitsPayload(tx, []byte(prop.Payload))
	if err != nil {
		return "", nil, err
	}
	b, err := json.Marshal(p.Limits)
	if err != nil {
		return "", nil, err
	}
	if err := tx.SetClientLimits(p.Name, string(b)); err != nil {
		return "", nil, err
	}
	return p.Name, map[string]any{"limits": p.Limits}, nil
}

func clientView(c store.Client) wire.Client {
	w := wire.Client{Name: c.Name, Kind: c.Kind, Brand: c.Brand, Models: c.Models, Types: c.Types, ClientCertSHA256: c.CertSHA256,
		CreatedAt: c.CreatedAt, RevokedAt: c.RevokedAt}
	if c.Limits != "" {
		if l, err := parseStoredLimits(c.Limits); err == nil {
			w.Limits = l.wire()
		}
	}
	return w
}

// checkSystemUserLimits decides whether cl may have the system-user r
// signed now, by its limits (a client without limits is no signing
// client and may not).
func (a *Appliance) checkSystemUserLimits(cl *Client, r wire.SystemUserRequest, now time.Time) error {
	if cl.limits == nil {
		return a.policyRefusal(policy.KindMismatch(cl.kind, SigningClient))
	}
	if err := cl.limits.CheckSystemUser(policy.SystemUserRequest{Models: r.Models, HasPassword: r.Password != "",
		HasSSHKeys: len(r.SSHKeys) > 0, Serials: len(r.Serials), Since: r.Since, Until: r.Until}, now); err != nil {
		return a.policyError(err)
	}
	return nil
}

// checkPreseedLimits decides whether cl may have a preseed for model
// signed.
func (a *Appliance) checkPreseedLimits(cl *Client, model string) error {
	if cl.limits == nil {
		return a.policyRefusal(policy.KindMismatch(cl.kind, SigningClient))
	}
	if err := cl.limits.CheckModels([]string{model}); err != nil {
		return a.policyError(err)
	}
	return nil
}

// policyError is a policy refusal as the core's error (see refusal), or
// err itself.
func (a *Appliance) policyError(err error) error {
	var r *policy.Refusal
	if errors.As(err, &r) {
		return a.policyRefusal(r)
	}
	return err
}
