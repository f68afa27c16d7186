package httpapi

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/keyrack/keyrack/appliance"
)

// observe is the outermost middleware. It renders a handler's error
// right away, so that the status it logs and counts is the one sent, then
// logs one line per request (route, status, duration: never headers or
// bodies, which carry API keys and assertions) and updates the metrics.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		s.metrics.inFlight.Inc()
		defer s.metrics.inFlight.Dec()
		start := time.Now()
		if err := next(c); err != nil {
			c.Error(err)
		}
		took := time.Since(start)
		route := c.Path()
		if route == "" || c.Response().Status == http.StatusNotFound && route == "/*" {
			route = "unmatched"
		}
		status := c.Response().Status
		s.metrics.observe(route, status, took)
		s.log.Info("request", "method", c.Request().Method, "route", route,
			"status", status, "duration_ms", took.Milliseconds(), "remote", c.RealIP())
		return nil
	}
}

// maxHeaderBytes bounds a request's line and headers.
const maxHeaderBytes = 64 << 10

var errHeadersTooLarge = &apiError{Status: http.StatusRequestHeaderFieldsTooLarge, Code: "headers-too-large",
	Message: "the request's headers are larger than the appliance accepts (64 KiB)"}

// headerLimit answers a request whose line and headers exceed
// maxHeaderBytes with 431, as JSON.
func headerLimit(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		n := len(r.Method) + len(r.RequestURI) + len(r.Proto) + len(r.Host)
		for k, vs := range r.Header {
			for _, v := range vs {
				n += len(k) + len(v) + 4
			}
		}
		if n > maxHeaderBytes {
			return errHeadersTooLarge
		}
		return next(c)
	}
}

// admission takes the request's place in the core's bounded signing
// queue: a request that finds it full is answered 503 + Retry-After at
// once. The place travels in the request's context and is given back when
// the token has answered, or when the request ends.
func (s *Server) admission(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		ctx, release, err := s.app.Admit(c.Request().Context())
		if err != nil {
			return err
		}
		defer release()
		c.SetRequest(c.Request().WithContext(ctx))
		return next(c)
	}
}

const (
	officerKey = "keyrack.officer"
	clientKey  = "keyrack.client"
)

// bearer is the credential of an Authorization: Bearer header, or "".
func bearer(c echo.Context) string {
	token, ok := strings.CutPrefix(c.Request().Header.Get(echo.HeaderAuthorization), "Bearer ")
	if !ok {
		return ""
	}
	return token
}

// officerChannel guards everything officers send (logins, session tokens,
// signatures, key material). On an appliance that is not a dev appliance
// it refuses plain HTTP from anywhere but this machine: secrets cross the
// network only over TLS. Where the configuration asks for officers'
// client certificates, it refuses a connection without a verified one.
func (s *Server) officerChannel(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if err := s.channelError(c); err != nil {
			return err
		}
		return next(c)
	}
}

// channelError says why the request's connection is not fit for what
// officers send, or nil (see officerChannel).
func (s *Server) channelError(c echo.Context) error {
	if !s.cfg.Dev && c.Request().TLS == nil && !loopback(c.RealIP()) {
		return errTLSRequired
	}
	if s.cfg.TLS.OfficerClientCert {
		if st := c.Request().TLS; st == nil || len(st.VerifiedChains) == 0 {
			return errClientCertRequired
		}
	}
	return nil
}

func loopback(addr string) bool {
	ip := net.ParseIP(addr)
	return ip != nil && ip.IsLoopback()
}

// requireOfficer authenticates officer endpoints: the channel
// (officerChannel), then the officer's session.
func (s *Server) requireOfficer(next echo.HandlerFunc) echo.HandlerFunc {
	return s.officerChannel(func(c echo.Context) error {
		name, err := s.app.AuthenticateOfficer(c.Request().Context(), bearer(c), c.RealIP(), clientCert(c))
		if err != nil {
			return err
		}
		c.Set(officerKey, name)
		return next(c)
	})
}

// clientCert is the SHA-256 (hex) of the TLS client certificate the
// connection presented, or "".
func clientCert(c echo.Context) string {
	st := c.Request().TLS
	if st == nil || len(st.PeerCertificates) == 0 {
		return ""
	}
	sum := sha256.Sum256(st.PeerCertificates[0].Raw)
	return hex.EncodeToString(sum[:])
}

func officerOf(c echo.Context) string {
	name, _ := c.Get(officerKey).(string)
	return name
}

// requireClient authenticates factory clients of kind by the api-key
// header, the header snapd sends from the gadget's device-service.headers
// (or a Bearer credential), with the TLS client certificate the connection
// presented, which a signing client may be bound to.
func (s *Server) requireClient(kind appliance.ClientKind) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			token := c.Request().Header.Get("api-key")
			if token == "" {
				token = bearer(c)
			}
			cl, err := s.app.AuthenticateClient(c.Request().Context(), token, c.RealIP(), kind, clientCert(c))
			if err != nil {
				return err
			}
			c.Set(clientKey, cl)
			return next(c)
		}
	}
}

// requireSigningClient guards the signing endpoints: their credential is
// a secret, so it is taken only over TLS or from this machine (on an
// appliance that is not a dev appliance, as officers' are), then it must
// be a signing client's (and its bound certificate's, if any).
func (s *Server) requireSigningClient(next echo.HandlerFunc) echo.HandlerFunc {
	auth := s.requireClient(appliance.SigningClient)(next)
	return func(c echo.Context) error {
		if !s.cfg.Dev && c.Request().TLS == nil && !loopback(c.RealIP()) {
			return errSigningTLSRequired
		}
		return auth(c)
	}
}

func clientOf(c echo.Context) *appliance.Client {
	cl, _ := c.Get(clientKey).(*appliance.Client)
	return cl
}
