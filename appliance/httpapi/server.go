// Package httpapi is keyrackd's HTTP API: echo routes and middleware
// (authentication extraction, admission, throttled logins, observation,
// recovery), handlers that decode a request, make one call into the core
// (package appliance) and encode its answer, the one mapping from the
// core's error kinds to a status, a JSON body and Retry-After, the health
// check, TLS and Serve.
//
// It imports the core and the wire types, never the token (hsm) or the
// store: every decision is the core's.
package httpapi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/wire"
)

// Server is the appliance's HTTP API.
type Server struct {
	app     *appliance.Appliance
	cfg     appliance.Config
	log     *slog.Logger
	echo    *echo.Echo
	metrics *httpMetrics
}

// New puts the HTTP API in front of the core.
func New(app *appliance.Appliance) *Server {
	cfg, log := app.Config(), app.Log()
	s := &Server{app: app, cfg: cfg, log: log, metrics: newHTTPMetrics(app.Metrics())}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.errorHandler
	// The peer address, or what a configured proxy forwards for: a client
	// must not choose the address its failed logins are counted against.
	e.IPExtractor = echo.ExtractIPDirect()
	if nets, _ := cfg.HTTP.TrustedProxyNets(); len(nets) > 0 {
		opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
		for _, n := range nets {
			opts = append(opts, echo.TrustIPRange(n))
		}
		e.IPExtractor = echo.ExtractIPFromXFFHeader(opts...)
	}
	e.Use(s.observe)
	e.Use(headerLimit)
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			log.Error("panic in handler", "route", c.Path(), "err", err, "stack", string(stack))
			return err
		},
	}))
	e.Use(middleware.BodyLimit(fmt.Sprintf("%dB", cfg.MaxBodyBytes)))

	e.GET("/v1/health", s.health)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(app.Metrics(), promhttp.HandlerOpts{})))
	s.officerRoutes(e)
	s.auditRoutes(e)
	s.deviceRoutes(e)
	s.echo = e
	return s
}

// Handler is the API as an http.Handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.echo }

// health answers 200 only when the token answers, we are logged in, and
// the store takes writes. Anyone learns that and a fixed reason word; the
// details (the token's label and error, the store's failure with its
// file) only an officer with a session over a channel fit for it.
func (s *Server) health(c echo.Context) error {
	h := s.app.Health(c.Request().Context())
	status := http.StatusOK
	if !h.Up {
		status = http.StatusServiceUnavailable
		if h.RetryAfter > 0 {
			c.Response().Header().Set("Retry-After", retryAfter(h.RetryAfter))
		}
	}
	if tok := bearer(c); tok != "" && s.channelError(c) == nil {
		if _, err := s.app.AuthenticateOfficer(c.Request().Context(), tok, c.RealIP(), clientCert(c)); err == nil {
			return writeJSON(c, status, h.Body)
		}
	}
	return writeJSON(c, status, wire.HealthSummary{Status: h.Body.Status, Reason: h.Body.Reason})
}

// Serve answers on ln until ctx is done, then stops taking connections
// and drains in-flight requests for at most cfg.ShutdownTimeout. The
// core's janitor runs meanwhile.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.echo,
		ReadHeaderTimeout: time.Duration(s.cfg.HTTP.ReadHeaderTimeout),
		ReadTimeout:       time.Duration(s.cfg.HTTP.ReadTimeout),
		WriteTimeout:      time.Duration(s.cfg.HTTP.WriteTimeout),
		IdleTimeout:       time.Duration(s.cfg.HTTP.IdleTimeout),
		// net/http answers headers over its limit itself, in text/plain,
		// which snapd shows as a bare status: its limit is only the outer
		// bound, and maxHeaderBytes is enforced in JSON (headerLimit).
		MaxHeaderBytes: 4 * maxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	if s.cfg.TLS.CertFile != "" {
		tc, err := tlsConfig(s.cfg.TLS)
		if err != nil {
			return err
		}
		hs.TLSConfig = tc
		ln = tls.NewListener(ln, tc)
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	go s.app.RunJanitor(ctx)
	go s.app.RunCheckpoints(ctx)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Duration(s.cfg.ShutdownTimeout))
	defer cancel()
	err := hs.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	if err != nil {
		return fmt.Errorf("draining requests: %w", err)
	}
	return nil
}
