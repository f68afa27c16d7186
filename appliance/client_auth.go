package appliance

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/policy"
)

const clientKey = "keyrack.client"

type authedClient struct {
	name  string
	scope *policy.ClientScope
}

var errNoAPIKey = &APIError{Status: http.StatusUnauthorized, Code: "unauthorized",
	Message: "missing or invalid API key (header api-key: krk_c_...)"}

// requireClient authenticates factory clients by the api-key header, the
// header snapd sends from the gadget's device-service.headers.
func (s *Server) requireClient(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		token := c.Request().Header.Get("api-key")
		if token == "" {
			if auth, ok := strings.CutPrefix(c.Request().Header.Get(echo.HeaderAuthorization), "Bearer "); ok {
				token = auth
			}
		}
		if strings.HasPrefix(token, officerPrefix) {
			return &APIError{Status: http.StatusForbidden, Code: "forbidden", Message: "officer credentials cannot be used on device endpoints"}
		}
		var cc cachedClient
		_, err := s.authenticate(c, clientPrefix, token, errNoAPIKey, func(ctx context.Context, name string) ([]byte, bool, error) {
			var err error
			cc, err = s.client(ctx, name)
			return cc.client.SecretHash, cc.client.RevokedAt != nil, err
		})
		if err != nil {
			return err
		}
		c.Set(clientKey, &authedClient{name: cc.client.Name, scope: cc.scope})
		return next(c)
	}
}

// client returns API client name with its compiled scope, cached (see
// keyCache): the record is read again after configTTL or after this
// process changed any client.
func (s *Server) client(ctx context.Context, name string) (cachedClient, error) {
	now := time.Now()
	if cc, ok := cacheGet(s, s.cache.clients, name, now); ok {
		return cc, nil
	}
	cc := cachedClient{gen: s.db.ConfigGeneration(), at: now}
	err := s.db.View(ctx, func(tx *store.Tx) error {
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
	cachePut(s, s.cache.clients, name, cc)
	return cc, nil
}

func clientOf(c echo.Context) *authedClient {
	cl, _ := c.Get(clientKey).(*authedClient)
	return cl
}
