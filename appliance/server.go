// Package appliance is keyrackd: its HTTP API, the services behind it and
// their configuration. It reaches the token only through package hsm.
package appliance

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keyrack/keyrack/appliance/assertion"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/hsm"
)

// Version is set at build time (-ldflags -X).
var Version = "dev"

// Server is the appliance's HTTP API.
type Server struct {
	cfg       Config
	mod       *hsm.Module
	db        *store.DB
	log       *slog.Logger
	echo      *echo.Echo
	metrics   *metrics
	importKey *hsm.Key
	cache     keyCache
	// admit holds one token per signing request in progress; its capacity
	// is the bound of the signing queue.
	admit chan struct{}
	// limiter throttles failed authentications.
	limiter *authLimiter
}

// New wires the API onto an open token module and store: it finds or makes
// the import key and repairs what an interrupted ceremony left.
func New(ctx context.Context, cfg Config, mod *hsm.Module, db *store.DB, log *slog.Logger) (*Server, error) {
	s := &Server{cfg: cfg, mod: mod, db: db, log: log, metrics: newMetrics(mod, db, Version),
		cache: keyCache{roles: map[string]roles{}, keys: map[string]*hsm.Key{}, signers: map[string]*assertion.Signer{},
			bindings: map[bindingKey]binding{}, clients: map[string]cachedClient{}},
		admit:   make(chan struct{}, cfg.Limits.SigningSlots(mod.Sessions())),
		limiter: newAuthLimiter(cfg.Limits.AuthFailures, time.Duration(cfg.Limits.AuthWindow))}
	ik, err := ensureImportKey(ctx, mod, db)
	if err != nil {
		return nil, err
	}
	s.importKey = ik
	// At start-up an embedded (SQLite) store belongs to this appliance
	// alone and nothing of it is in flight: repair everything at once. A
	// shared store may hold other appliances' live work: only stale items.
	startup := staleAfter
	if cfg.Store.Driver == "sqlite" {
		startup = 0
	}
	if err := s.reconcile(ctx, startup); err != nil {
		return nil, err
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.errorHandler
	// The peer address, never X-Forwarded-For: a client must not choose
	// the address its failed logins are counted against.
	e.IPExtractor = echo.ExtractIPDirect()
	e.Use(s.observe)
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			log.Error("panic in handler", "route", c.Path(), "err", err, "stack", string(stack))
			return err
		},
	}))
	e.Use(middleware.BodyLimit(fmt.Sprintf("%dB", cfg.MaxBodyBytes)))

	e.GET("/v1/health", s.health)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})))
	s.officerRoutes(e)
	s.deviceRoutes(e)
	s.echo = e
	return s, nil
}

// Handler is the API as an http.Handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.echo }

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

type healthBody struct {
	Status  string     `json:"status"`
	Version string     `json:"version"`
	Token   hsm.Status `json:"token"`
	// Store is "ok", or why the store refuses writes until the daemon
	// is restarted.
	Store string `json:"store"`
}

// health answers 200 only when the token answers, we are logged in, and
// the store takes writes.
func (s *Server) health(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), time.Duration(s.cfg.HealthTimeout))
	defer cancel()
	st := s.mod.Check(ctx)
	body := healthBody{Status: "ok", Version: Version, Token: st, Store: "ok"}
	storeErr := s.db.Err()
	if storeErr != nil {
		body.Store = storeErr.Error()
	}
	if st.Up && storeErr == nil {
		return writeJSON(c, http.StatusOK, body)
	}
	body.Status = "unavailable"
	// A token comes back by itself; a failed store takes a restart, after
	// an operator has looked at the disk, so no Retry-After then.
	if storeErr == nil {
		c.Response().Header().Set("Retry-After", "5")
	}
	return writeJSON(c, http.StatusServiceUnavailable, body)
}

// tlsConfig is TLS 1.2+ with the configured certificate; client
// certificates are verified when sent (officer endpoints may require one).
func tlsConfig(c TLSConfig) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if c.ClientCAFile != "" {
		pem, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: no certificate in %s", c.ClientCAFile)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return tc, nil
}

// staleAfter is how long a ceremony step or a serial reservation may stay
// pending before it is taken for interrupted: far longer than any live one
// (key generation takes seconds, a signature milliseconds).
const staleAfter = 10 * time.Minute

// janitor runs once a minute: it deletes request-ids that expired unused,
// and repairs work interrupted by a crash (of this or another appliance
// sharing the store) once it is stale.
func (s *Server) janitor(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.purgeNonces(ctx)
			if err := s.reconcile(ctx, staleAfter); err != nil {
				s.log.Warn("reconciling interrupted work", "err", err)
			}
		}
	}
}

func (s *Server) purgeNonces(ctx context.Context) {
	var n int64
	err := s.db.Update(ctx, func(tx *store.Tx) error {
		var err error
		n, err = tx.PurgeNonces(time.Now())
		return err
	})
	if err != nil {
		s.log.Warn("purging expired request-ids", "err", err)
		return
	}
	s.metrics.nonces.WithLabelValues("expired").Add(float64(n))
}

// Serve answers on ln until ctx is done, then stops taking connections
// and drains in-flight requests for at most cfg.ShutdownTimeout.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.echo,
		ReadHeaderTimeout: time.Duration(s.cfg.HTTP.ReadHeaderTimeout),
		ReadTimeout:       time.Duration(s.cfg.HTTP.ReadTimeout),
		WriteTimeout:      time.Duration(s.cfg.HTTP.WriteTimeout),
		IdleTimeout:       time.Duration(s.cfg.HTTP.IdleTimeout),
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
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
	go s.janitor(ctx)
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
