package appliance

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const minimalConfig = `{"token": {"module": "/usr/lib/softhsm/libsofthsm2.so", "label": "t", "pin_file": "/run/pin"}}`

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig(strings.NewReader(minimalConfig))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:8080" || cfg.StateDir != "/var/lib/keyrack" ||
		time.Duration(cfg.ShutdownTimeout) != 15*time.Second || cfg.MaxBodyBytes != 1<<20 || cfg.Dev {
		t.Fatalf("defaults: %+v", cfg)
	}
	h := cfg.Token.HSM()
	if h.Path != "/usr/lib/softhsm/libsofthsm2.so" || h.TokenLabel != "t" || h.PIN.File != "/run/pin" || h.IdleSigning {
		t.Fatalf("hsm config: %+v", h)
	}
	idle, err := ParseConfig(strings.NewReader(`{"token": {"module": "m", "label": "t", "pin_file": "p", "signing_priority": "idle"}}`))
	if err != nil || !idle.Token.HSM().IdleSigning {
		t.Fatalf("signing_priority idle: %+v %v", idle.Token.HSM(), err)
	}
}

func TestParseConfigRefuses(t *testing.T) {
	for name, tc := range map[string]struct{ in, want string }{
		"unknown key":       {`{"listen": "127.0.0.1:1", "lisen": "x", "token": {"module": "m", "label": "t", "pin_file": "p"}}`, `unknown field "lisen"`},
		"unknown token key": {`{"token": {"module": "m", "label": "t", "pin_file": "p", "pin": "1234"}}`, `unknown field "pin"`},
		"no module":         {`{"token": {"label": "t", "pin_file": "p"}}`, "token.module"},
		"no token selector": {`{"token": {"module": "m", "pin_file": "p"}}`, "token.label or token.serial"},
		"two PIN sources":   {`{"token": {"module": "m", "label": "t", "pin_file": "p", "pin_env": "X"}}`, "exactly one"},
		"no PIN source":     {`{"token": {"module": "m", "label": "t"}}`, "exactly one"},
		"bad duration":      {`{"shutdown_timeout": "soon", "token": {"module": "m", "label": "t", "pin_file": "p"}}`, "duration"},
		"numeric duration":  {`{"shutdown_timeout": 5, "token": {"module": "m", "label": "t", "pin_file": "p"}}`, "duration"},
		"bad listen":        {`{"listen": "8080", "token": {"module": "m", "label": "t", "pin_file": "p"}}`, "listen"},
		"trailing data":     {minimalConfig + `{}`, "trailing"},
		"tiny body limit":   {`{"max_body_bytes": 10, "token": {"module": "m", "label": "t", "pin_file": "p"}}`, "max_body_bytes"},
		"not json":          {`listen = 1`, "invalid"},
		"postgres no dsn":   {`{"store": {"driver": "postgres"}, "token": {"module": "m", "label": "t", "pin_file": "p"}}`, "store.dsn"},
		"sqlite with dsn":   {`{"store": {"dsn": "host=x"}, "token": {"module": "m", "label": "t", "pin_file": "p"}}`, "store.dsn"},
		"bad priority":      {`{"token": {"module": "m", "label": "t", "pin_file": "p", "signing_priority": "low"}}`, "token.signing_priority"},
		"two queue bounds":  {`{"limits": {"queue": 1, "queue_per_session": 1}, "token": {"module": "m", "label": "t", "pin_file": "p"}}`, "not both"},
		"negative queue":    {`{"limits": {"queue": -1}, "token": {"module": "m", "label": "t", "pin_file": "p"}}`, "limits.queue"},
		"unknown driver":    {`{"store": {"driver": "mysql"}, "token": {"module": "m", "label": "t", "pin_file": "p"}}`, "store.driver"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseConfig(strings.NewReader(tc.in))
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrConfig) && !strings.Contains(err.Error(), "duration") {
				t.Errorf("error %v is not ErrConfig", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// TestSigningSlots: one signing per session plus the waiting places: half
// the sessions by default, or as configured in all or per session.
func TestSigningSlots(t *testing.T) {
	parse := func(limits string) LimitsConfig {
		t.Helper()
		cfg, err := ParseConfig(strings.NewReader(`{"limits": {` + limits + `}, "token": {"module": "m", "label": "t", "pin_file": "p"}}`))
		if err != nil {
			t.Fatal(err)
		}
		return cfg.Limits
	}
	for _, tc := range []struct {
		limits         string
		sessions, want int
	}{
		{``, 1, 2}, {``, 2, 3}, {``, 8, 12},
		{`"queue": 0`, 2, 2}, {`"queue": 5`, 2, 7},
		{`"queue_per_session": 0`, 4, 4}, {`"queue_per_session": 1`, 2, 4}, {`"queue_per_session": 2`, 3, 9},
	} {
		if got := parse(tc.limits).SigningSlots(tc.sessions); got != tc.want {
			t.Errorf("limits {%s}, %d sessions: %d slots, want %d", tc.limits, tc.sessions, got, tc.want)
		}
	}
}
