package appliance

import (
	"context"
	"strings"
	"time"

	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/policy"
)

// ClientKind is what an API client is for (see policy.ClientKind): the
// endpoint a credential is presented on says which kind it must be.
type ClientKind = policy.ClientKind

// The two kinds of API client.
const (
	DeviceServiceClient = policy.DeviceService
	SigningClient       = policy.Signing
)

// Client is an authenticated API client: its name, kind, compiled scope
// and, for a signing client, its limits.
type Client struct {
	name   string
	kind   ClientKind
	scope  *policy.ClientScope
	limits *policy.Limits // nil for a device-service client
}

// Name is the client's name, as the audit log and the signing log know it.
func (c *Client) Name() string { return c.name }

// Kind is the client's kind.
func (c *Client) Kind() ClientKind { return c.kind }

var errNoAPIKey = &Error{Kind: Unauthenticated, Code: "unauthorized",
	Message: "missing or invalid API key (header api-key: krk_c_...)"}

// AuthenticateClient checks a factory client's API key (the api-key
// header snapd sends from the gadget's device-service headers) presented
// from source, the peer's address, on an endpoint for clients of kind
// want. certSHA256 is the TLS client certificate the connection presented
// ("" for none): a signing client bound to a certificate is accepted only
// with it, on every request. A valid key of the other kind is refused
// (client-kind): a device-service key is public, so what it obtains must
// not depend on who holds it, and a signing key is never good for what a
// gadget's key does.
func (a *Appliance) AuthenticateClient(ctx context.Context, token, source string, want ClientKind, certSHA256 string) (*Client, error) {
	if strings.HasPrefix(token, officerPrefix) || strings.HasPrefix(token, sessionPrefix) {
		return nil, refused("forbidden", "officer credentials cannot be used on device endpoints")
	}
	var cc cachedClient
	_, err := a.authenticate(ctx, source, clientPrefix, token, errNoAPIKey, func(ctx context.Context, name string) ([]byte, bool, error) {
		var err error
		cc, err = a.client(ctx, name)
		return cc.client.SecretHash, cc.client.RevokedAt != nil, err
	})
	if err == errNoAPIKey && cc.client.RevokedAt != nil && credentialMatches(token, cc.client.SecretHash) {
		// The client's own key, revoked: still the same answer as a wrong
		// key (authenticate), but one the officers must see. Only a
		// revoked record costs this second hash.
		a.signingRefused(ctx, ruleClientRevoked, cc.client.Name, cc.client.Name, "", source)
	}
	if err != nil {
		return nil, err
	}
	cl := &Client{name: cc.client.Name, kind: ClientKind(cc.client.Kind), scope: cc.scope, limits: cc.limits}
	if cl.kind != want {
		return nil, a.policyRefusal(policy.KindMismatch(cl.kind, want))
	}
	if bound := cc.client.CertSHA256; bound != "" && bound != certSHA256 {
		a.metrics.refusals.WithLabelValues(ruleClientCert).Inc()
		what := "presented none"
		if certSHA256 != "" {
			what = "presented another"
		}
		return nil, refused(ruleClientCert, "this signing client is bound to a TLS client certificate (sha256 "+bound[:16]+"...) and the connection "+what+": connect over TLS with the certificate bound to it")
	}
	return cl, nil
}

// ruleClientCert names the refusal of a signing client connecting without
// the certificate bound to it.
const ruleClientCert = "client-certificate"

// policyRefusal counts a policy refusal and makes it the core's error, with the
// rule as its code so that callers (and snapd's users) read which rule
// refused.
func (a *Appliance) policyRefusal(r *policy.Refusal) error {
	a.metrics.refusals.WithLabelValues(r.Rule).Inc()
	return &Error{Kind: Refused, Code: r.Rule, Message: r.Message, Err: r}
}

// client returns API client name with its compiled scope and limits,
// cached (see keyCache): the record is read again after CacheTTL or after
// this process changed any client.
func (a *Appliance) client(ctx context.Context, name string) (cachedClient, error) {
	now := time.Now()
	if cc, ok := cacheGet(a, a.cache.clients, name, now); ok {
		return cc, nil
	}
	cc := cachedClient{gen: a.db.ConfigGeneration(), at: now}
	err := a.db.View(ctx, func(tx *store.Tx) error {
		var err error
		cc.client, err = tx.GetClientByName(name)
		return err
	})
	if err != nil {
		return cc, err
	}
	if cc.scope, err = policy.NewClientScope(cc.client.Brand, cc.client.Models, cc.client.Types); err != nil {
		return cc, err
	}
	if ClientKind(cc.client.Kind) == SigningClient {
		lp, err := parseStoredLimits(cc.client.Limits)
		if err != nil {
			return cc, err
		}
		l := lp.policy()
		cc.limits = &l
	}
	cachePut(a, a.cache.clients, name, cc)
	return cc, nil
}
