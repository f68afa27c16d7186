package appliance

import (
	"regexp"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/hsm"
	"github.com/keyrack/keyrack/policy"
)

// metrics are the core's Prometheus series (the front ends add their own
// to the same registry), on a registry of its own so that nothing a
// library registers globally leaks onto /metrics. Labels
// take only values from closed sets (route templates, status classes):
// never a serial, a key name or anything a client sent.
type metrics struct {
	reg        *prometheus.Registry
	signatures *prometheus.CounterVec
	signTime   *prometheus.HistogramVec
	waitTime   prometheus.Histogram
	storeTime  *prometheus.HistogramVec
	refusals   *prometheus.CounterVec
	nonces     *prometheus.CounterVec
	returned   prometheus.Counter
	rekeys     *prometheus.CounterVec
	duplicates prometheus.Counter
	overloaded prometheus.Counter

	// signRefusals: see refusals.go.
	signRefusals *prometheus.CounterVec
}

func newMetrics(mod *hsm.Module, db *store.DB, version string) *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{reg: reg}
	m.signTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "keyrack_token_sign_duration_seconds",
		Help:    "Time of one signature inside the token (C_SignInit + C_Sign), by result.",
		Buckets: []float64{.001, .002, .004, .006, .008, .01, .015, .02, .03, .05, .1, .25, 1},
	}, []string{"result"})
	m.waitTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "keyrack_token_session_wait_seconds",
		Help:    "Time a request waited for a free token session.",
		Buckets: []float64{0, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	})
	m.storeTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "keyrack_store_update_duration_seconds",
		Help:    "Time of one store update from the call to its commit, waiting for the group-commit writer included, by durability (durable: synced to disk before returning; unsynced: request-ids and reservations).",
		Buckets: []float64{.00025, .0005, .001, .002, .004, .006, .008, .01, .015, .025, .05, .1, .25, 1},
	}, []string{"durability"})
	m.storeTime.WithLabelValues("durable")
	m.storeTime.WithLabelValues("unsynced")
	db.SetObserver(store.Observer{Update: func(durable bool, d time.Duration) {
		l := "unsynced"
		if durable {
			l = "durable"
		}
		m.storeTime.WithLabelValues(l).Observe(d.Seconds())
	}})
	mod.SetObserver(hsm.Observer{
		Sign: func(d time.Duration, err error) {
			r := "ok"
			if err != nil {
				r = "error"
			}
			m.signTime.WithLabelValues(r).Observe(d.Seconds())
		},
		AcquireWait: func(d time.Duration) { m.waitTime.Observe(d.Seconds()) },
	})
	reg.MustRegister(m.signTime, m.waitTime, m.storeTime,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keyrack_token_up",
			Help: "1 while the token is reachable and logged in, 0 while it is down.",
		}, func() float64 {
			if mod.Up() {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "keyrack_audit_events_total",
			Help: "Audit events written (committed).",
		}, func() float64 { return float64(db.AuditWrites()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "keyrack_store_commits_total",
			Help: "Write transactions committed; each holds every update waiting when it began (group commit).",
		}, func() float64 { return float64(db.Commits()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "keyrack_store_log_syncs_total",
			Help: "Syncs of the embedded store's write-ahead log (0 on PostgreSQL); each makes every commit before it durable.",
		}, func() float64 { return float64(db.LogSyncs()) }))
	m.signatures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyrack_signatures_total",
		Help: "Assertions signed, by assertion type, signing key id and result.",
	}, []string{"type", "key_id", "result"})
	m.refusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyrack_policy_refusals_total",
		Help: "Requests refused by a client scope, kind, certificate or limit, or a key role, by rule.",
	}, []string{"rule"})
	m.nonces = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyrack_request_ids_total",
		Help: "Device request-ids by event: issued, consumed (by a signed serial), and refused as expired, invalid (not issued here to that client) or reused.",
	}, []string{"event"})
	m.duplicates = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keyrack_serial_duplicates_refused_total",
		Help: "Serial requests refused because the serial belongs to another device key.",
	})
	m.returned = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keyrack_serials_returned_total",
		Help: "Serial requests answered with the serial on record for the same device key (a retry: nothing signed).",
	})
	m.rekeys = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyrack_serial_rekeys_total",
		Help: "Serials moved to a new device key, by what allowed it (old-device-key, officers).",
	}, []string{"by"})
	for _, b := range []string{"old-device-key", "officers"} {
		m.rekeys.WithLabelValues(b)
	}
	// Series of closed label sets exist from the start, at zero, so that
	// dashboards and alerts see 0 rather than no data.
	for _, e := range []string{"issued", "consumed", "expired", "invalid", "reused"} {
		m.nonces.WithLabelValues(e)
	}
	for _, r := range []string{"ok", "error"} {
		m.signTime.WithLabelValues(r)
	}
	for _, r := range []string{"key-type", "key-model", "client-brand", "client-model", "client-type", "auth-rate",
		policy.RuleClientKind, ruleClientCert, policy.RuleLimitModels, policy.RuleLimitValidity, policy.RuleLimitPassword,
		policy.RuleLimitSSHKeys, policy.RuleLimitSerials} {
		m.refusals.WithLabelValues(r)
	}
	m.overloaded = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keyrack_overload_refusals_total",
		Help: "Signing requests answered 503 because the signing queue was full.",
	})
	m.signRefusals = newSigningRefusalsMetric()
	reg.MustRegister(m.signatures, m.refusals, m.signRefusals, m.nonces, m.returned, m.rekeys, m.duplicates, m.overloaded)
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "keyrack_build_info",
		Help:        "Build information; always 1.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": goVersion()},
	})
	build.Set(1)
	reg.MustRegister(build,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keyrack_token_sessions",
			Help: "Configured token worker sessions.",
		}, func() float64 { return float64(mod.Sessions()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keyrack_token_sessions_in_use",
			Help: "Token worker sessions lent out right now.",
		}, func() float64 { return float64(mod.InUse()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "keyrack_token_recoveries_total",
			Help: "Attempts to bring the token back after it lost sessions, login or handles.",
		}, func() float64 { return float64(mod.Recoveries()) }),
		// Besides the defaults, the CPU the garbage collector takes
		// (runtime/metrics' estimate): next to signing it is the
		// appliance's cost that grows with load.
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
			collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/cpu/classes/gc/total:cpu-seconds$`)})),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

func goVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.GoVersion
	}
	return "unknown"
}
