package appliance

import (
	"net/http"
	"strings"

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
		var cl store.Client
		_, err := s.authenticate(c, clientPrefix, token, errNoAPIKey, func(tx *store.Tx, name string) ([]byte, bool, error) {
			var err error
			cl, err = tx.GetClientByName(name)
			return cl.SecretHash, cl.RevokedAt != nil, err
		})
		if err != nil {
			return err
		}
		scope, err := policy.NewClientScope(cl.Brand, cl.Models, cl.Types)
		if err != nil {
			return err
		}
		c.Set(clientKey, &authedClient{name: cl.Name, scope: scope})
		return next(c)
	}
}

func clientOf(c echo.Context) *authedClient {
	cl, _ := c.Get(clientKey).(*authedClient)
	return cl
}
