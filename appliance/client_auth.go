package appliance

import (
	"context"
	"strings"
	"time"

	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/policy"
)

// Client is an authenticated API client: its name and compiled scope.
type Client struct {
	name  string
	scope *policy.ClientScope
}

// Name is the client's name, as the audit log and the signing log know it.
func (c *Client) Name() string { return c.name }

var errNoAPIKey = &Error{Kind: Unauthenticated, Code: "unauthorized",
	Message: "missing or invalid API key (header api-key: krk_c_...)"}

// AuthenticateClient checks a factory client's API key (the api-key
// header snapd sends from the gadget's device-service headers) presented
// from source, the peer's address.
func (a *Appliance) AuthenticateClient(ctx context.Context, token, source string) (*Client, error) {
	if strings.HasPrefix(token, officerPrefix) || strings.HasPrefix(token, sessionPrefix) {
		return nil, refused("forbidden", "officer credentials cannot be used on device endpoints")
	}
	var cc cachedClient
	_, err := a.authenticate(ctx, source, clientPrefix, token, errNoAPIKey, func(ctx context.Context, name string) ([]byte, bool, error) {
		var err error
		cc, err = a.client(ctx, name)
		return cc.client.SecretHash, cc.client.RevokedAt != nil, err
	})
	if err != nil {
		return nil, err
	}
	return &Client{name: cc.client.Name, scope: cc.scope}, nil
}

// client returns API client name with its compiled scope, cached (see
// keyCache): the record is read again after CacheTTL or after this
// process changed any client.
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
	cachePut(a, a.cache.clients, name, cc)
	return cc, nil
}
