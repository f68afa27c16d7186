package appliance

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/keyrack/keyrack/hsm"
)

// ErrConfig marks a configuration the daemon refuses to start with.
var ErrConfig = errors.New("invalid configuration")

// Config is keyrackd's configuration file (JSON). Unknown keys are an
// error: a misspelt security setting must stop the daemon, not be ignored.
type Config struct {
	// Listen is the address of the HTTP API (default 127.0.0.1:8080).
	Listen string `json:"listen"`
	// Token selects the PKCS#11 token that holds the keys.
	Token TokenConfig `json:"token"`
	// StateDir holds the appliance's own state (default /var/lib/keyrack).
	StateDir string `json:"state_dir"`
	// ShutdownTimeout bounds the drain of in-flight requests on SIGTERM.
	ShutdownTimeout Duration `json:"shutdown_timeout"`
	// HealthTimeout bounds one token health check (default 2s).
	HealthTimeout Duration `json:"health_timeout"`
	// MaxBodyBytes caps request bodies (default 1 MiB).
	MaxBodyBytes int64 `json:"max_body_bytes"`
	// Dev marks a development appliance (dev token, demo data). Settings
	// that are unsafe in production are only accepted with it.
	Dev bool `json:"dev"`
	// Officers configures the ceremony quorum.
	Officers OfficersConfig `json:"officers"`
	// Store is where the appliance keeps its records.
	Store StoreConfig `json:"store"`
	// Devices configures the device-service protocol.
	Devices DevicesConfig `json:"devices"`
	// TLS, when set, makes the API HTTPS only.
	TLS TLSConfig `json:"tls"`
	// Limits bounds the work the appliance accepts at once.
	Limits LimitsConfig `json:"limits"`
	// HTTP sets the server's timeouts: a slow or stalled client is cut
	// off instead of holding a connection and its memory.
	HTTP HTTPConfig `json:"http"`
}

// HTTPConfig holds the HTTP server's timeouts.
type HTTPConfig struct {
	ReadHeaderTimeout Duration `json:"read_header_timeout"` // default 10s
	ReadTimeout       Duration `json:"read_timeout"`        // default 30s
	WriteTimeout      Duration `json:"write_timeout"`       // default 60s
	IdleTimeout       Duration `json:"idle_timeout"`        // default 120s
	// TrustedProxies are the load balancers (addresses or CIDR ranges)
	// whose X-Forwarded-For names the client: only a request that came
	// from one of them is counted against the address it forwards for.
	// Empty: the TCP peer is the client, and X-Forwarded-For is ignored.
	TrustedProxies []string `json:"trusted_proxies,omitempty"`
}

// TrustedProxyNets parses TrustedProxies.
func (h HTTPConfig) TrustedProxyNets() ([]*net.IPNet, error) {
	var out []*net.IPNet
	for _, p := range h.TrustedProxies {
		if !strings.Contains(p, "/") {
			if ip := net.ParseIP(p); ip != nil {
				bits := 128
				if ip.To4() != nil {
					ip, bits = ip.To4(), 32
				}
				out = append(out, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
				continue
			}
		}
		_, n, err := net.ParseCIDR(p)
		if err != nil {
			return nil, fmt.Errorf("%w: http.trusted_proxies: %q is neither an address nor a CIDR range", ErrConfig, p)
		}
		out = append(out, n)
	}
	return out, nil
}

// LimitsConfig bounds the signing queue. Requests beyond it are answered
// 503 with Retry-After at once (snapd retries then) rather than queued
// without bound: a factory line gets a quick answer either way.
type LimitsConfig struct {
	// Queue is how many signing requests may wait for a token session, in
	// all, on top of one signing in each session (default: half the
	// sessions, rounded up). A waiting request keeps a session from idling
	// between one signature and the next request's arrival, and costs
	// every request behind it up to a signature's time; 0 keeps latency
	// lowest at some cost in throughput.
	Queue *int `json:"queue,omitempty"`
	// QueuePerSession sets the waiting places per session instead
	// (sessions x QueuePerSession in all); set Queue or this, not both.
	QueuePerSession *int `json:"queue_per_session,omitempty"`
	// AuthFailures failed authentications from one address, or for one
	// credential name, within AuthWindow block further attempts for
	// AuthWindow (defaults 10 and 1m).
	AuthFailures int      `json:"auth_failures"`
	AuthWindow   Duration `json:"auth_window"`
}

// SigningSlots is how many signing requests may be in progress at once:
// one signing per session and the waiting places.
func (l LimitsConfig) SigningSlots(sessions int) int {
	switch {
	case l.QueuePerSession != nil:
		return sessions * (1 + *l.QueuePerSession)
	case l.Queue != nil:
		return sessions + *l.Queue
	default:
		return sessions + (sessions+1)/2
	}
}

// TLSConfig configures HTTPS (TLS 1.2 and later).
type TLSConfig struct {
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
	// ClientCAFile verifies client certificates when clients send one.
	ClientCAFile string `json:"client_ca_file"`
	// OfficerClientCert requires a verified client certificate on every
	// officer endpoint, in addition to the officer credential.
	OfficerClientCert bool `json:"officer_client_cert"`
}

// DevicesConfig configures device registration.
type DevicesConfig struct {
	// NonceTTL is how long a request-id stays usable (default 10m).
	NonceTTL Duration `json:"nonce_ttl"`
}

// OfficersConfig is the M of M-of-N: how many distinct officers must
// approve a ceremony operation.
type OfficersConfig struct {
	// Quorum is M (default 2). 1 is accepted only in dev mode.
	Quorum int `json:"quorum"`
	// ProposalTTL is how long a proposal may wait for approvals (24h).
	ProposalTTL Duration `json:"proposal_ttl"`
}

// StoreConfig selects the store.
type StoreConfig struct {
	// Driver is "sqlite" (embedded, the default) or "postgres" (for
	// several appliances sharing one signing log).
	Driver string `json:"driver"`
	// Path is the SQLite file (default state_dir/keyrack.db).
	Path string `json:"path"`
	// DSN is the PostgreSQL connection string (pgx form), for "postgres".
	// Keep passwords out of it: use a .pgpass file or PGPASSFILE.
	DSN string `json:"dsn"`
}

// TokenConfig is the PKCS#11 part of Config.
type TokenConfig struct {
	// Module is the PKCS#11 shared library of the HSM vendor.
	Module string `json:"module"`
	// Label and/or Serial select the token (never a slot number).
	Label  string `json:"label"`
	Serial string `json:"serial"`
	// Exactly one PIN source.
	PINFile       string `json:"pin_file"`
	PINEnv        string `json:"pin_env"`
	PINCredential string `json:"pin_credential"`
	// Sessions is the number of signing sessions (default: CPUs).
	Sessions int `json:"sessions"`
	// AcquireTimeout bounds the wait for a free session (default 5s).
	AcquireTimeout Duration `json:"acquire_timeout"`
	// RetryInterval is the least time between reconnect attempts (1s).
	RetryInterval Duration `json:"retry_interval"`
	// SigningPriority is "normal" (default) or "idle": signatures made on
	// dedicated threads in Linux's SCHED_IDLE class, for a software token
	// (SoftHSM) on a machine of its own, so that request handling and the
	// store never wait behind the token's arithmetic. Never for a machine
	// shared with CPU-heavy work: idle threads get almost nothing then.
	SigningPriority string `json:"signing_priority,omitempty"`
}

// Signing priorities (TokenConfig.SigningPriority).
const (
	PriorityNormal = "normal"
	PriorityIdle   = "idle"
)

// HSM returns the hsm.Config this token section describes.
func (t TokenConfig) HSM() hsm.Config {
	return hsm.Config{
		Path:           t.Module,
		TokenLabel:     t.Label,
		TokenSerial:    t.Serial,
		PIN:            hsm.PINSource{File: t.PINFile, Env: t.PINEnv, Credential: t.PINCredential},
		Sessions:       t.Sessions,
		AcquireTimeout: time.Duration(t.AcquireTimeout),
		RetryInterval:  time.Duration(t.RetryInterval),
		IdleSigning:    t.SigningPriority == PriorityIdle,
	}
}

// Duration is a time.Duration written as "5s", "250ms" in JSON.
type Duration time.Duration

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"5s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", s)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// LoadConfig reads and checks a configuration file.
func LoadConfig(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	defer f.Close()
	cfg, err := ParseConfig(f)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes a configuration strictly and fills in defaults.
func ParseConfig(r io.Reader) (Config, error) {
	data, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var cfg Config
	if err := dec.Decode(&cfg); err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if dec.More() {
		return Config{}, fmt.Errorf("%w: trailing data after the configuration object", ErrConfig)
	}
	if err := cfg.Normalize(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Normalize fills in defaults and checks the configuration.
func (c *Config) Normalize() error {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("%w: listen %q: %w", ErrConfig, c.Listen, err)
	}
	if c.StateDir == "" {
		c.StateDir = "/var/lib/keyrack"
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = Duration(15 * time.Second)
	}
	if c.HealthTimeout == 0 {
		c.HealthTimeout = Duration(2 * time.Second)
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.Officers.Quorum == 0 {
		c.Officers.Quorum = 2
	}
	if c.Officers.Quorum < 1 || c.Officers.Quorum > 16 {
		return fmt.Errorf("%w: officers.quorum %d out of range 1..16", ErrConfig, c.Officers.Quorum)
	}
	if c.Officers.Quorum < 2 && !c.Dev {
		return fmt.Errorf("%w: officers.quorum 1 lets one officer act alone; it is accepted only with \"dev\": true", ErrConfig)
	}
	if c.Officers.ProposalTTL == 0 {
		c.Officers.ProposalTTL = Duration(24 * time.Hour)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return fmt.Errorf("%w: tls.cert_file and tls.key_file go together", ErrConfig)
	}
	if c.TLS.ClientCAFile != "" && c.TLS.CertFile == "" {
		return fmt.Errorf("%w: tls.client_ca_file needs tls.cert_file and tls.key_file", ErrConfig)
	}
	if c.TLS.OfficerClientCert && c.TLS.ClientCAFile == "" {
		return fmt.Errorf("%w: tls.officer_client_cert needs tls.client_ca_file", ErrConfig)
	}
	for _, d := range []struct {
		v   *Duration
		def time.Duration
	}{{&c.HTTP.ReadHeaderTimeout, 10 * time.Second}, {&c.HTTP.ReadTimeout, 30 * time.Second},
		{&c.HTTP.WriteTimeout, 60 * time.Second}, {&c.HTTP.IdleTimeout, 120 * time.Second}} {
		if *d.v == 0 {
			*d.v = Duration(d.def)
		}
	}
	if _, err := c.HTTP.TrustedProxyNets(); err != nil {
		return err
	}
	if c.Limits.AuthFailures == 0 {
		c.Limits.AuthFailures = 10
	}
	if c.Limits.AuthWindow == 0 {
		c.Limits.AuthWindow = Duration(time.Minute)
	}
	if c.Limits.AuthFailures < 1 {
		return fmt.Errorf("%w: limits.auth_failures must be at least 1", ErrConfig)
	}
	switch q, qs := c.Limits.Queue, c.Limits.QueuePerSession; {
	case q != nil && qs != nil:
		return fmt.Errorf("%w: set limits.queue or limits.queue_per_session, not both", ErrConfig)
	case q != nil && (*q < 0 || *q > 100000):
		return fmt.Errorf("%w: limits.queue %d out of range 0..100000", ErrConfig, *q)
	case qs != nil && (*qs < 0 || *qs > 1000):
		return fmt.Errorf("%w: limits.queue_per_session %d out of range 0..1000", ErrConfig, *qs)
	}
	if c.Devices.NonceTTL == 0 {
		c.Devices.NonceTTL = Duration(10 * time.Minute)
	}
	if c.Store.Driver == "" {
		c.Store.Driver = "sqlite"
	}
	switch c.Store.Driver {
	case "sqlite":
		if c.Store.DSN != "" {
			return fmt.Errorf("%w: store.dsn is for the postgres driver", ErrConfig)
		}
		if c.Store.Path == "" {
			c.Store.Path = filepath.Join(c.StateDir, "keyrack.db")
		}
	case "postgres":
		if c.Store.DSN == "" || c.Store.Path != "" {
			return fmt.Errorf("%w: the postgres driver takes store.dsn (and no store.path)", ErrConfig)
		}
	default:
		return fmt.Errorf("%w: store.driver %q (supported: sqlite, postgres)", ErrConfig, c.Store.Driver)
	}
	if c.MaxBodyBytes < 4096 {
		return fmt.Errorf("%w: max_body_bytes %d is too small for an assertion stream", ErrConfig, c.MaxBodyBytes)
	}
	t := c.Token
	if t.Module == "" {
		return fmt.Errorf("%w: token.module (the PKCS#11 library) is required", ErrConfig)
	}
	if t.Label == "" && t.Serial == "" {
		return fmt.Errorf("%w: token.label or token.serial is required", ErrConfig)
	}
	n := 0
	for _, s := range []string{t.PINFile, t.PINEnv, t.PINCredential} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("%w: set exactly one of token.pin_file, token.pin_env, token.pin_credential", ErrConfig)
	}
	if t.Sessions < 0 || t.Sessions > 256 {
		return fmt.Errorf("%w: token.sessions %d out of range 0..256", ErrConfig, t.Sessions)
	}
	switch t.SigningPriority {
	case "", PriorityNormal, PriorityIdle:
	default:
		return fmt.Errorf("%w: token.signing_priority %q: use %q or %q", ErrConfig, t.SigningPriority, PriorityNormal, PriorityIdle)
	}
	return nil
}
