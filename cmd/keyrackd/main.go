// Command keyrackd is the keyrack signing appliance daemon.
//
//	keyrackd -config /etc/keyrack/keyrackd.json
//	keyrackd -dev var/dev            # development: dev SoftHSM token, demo data
//	keyrackd -config FILE -bootstrap-officers alice=alice.pub,bob=bob.pub,carol=carol.pub
//	keyrackd -config FILE -bootstrap-officers alice=alice.pub:alice.crt,bob=bob.pub:bob.crt
//
// -bootstrap-officers enrols the first officers of a new appliance, each
// with the public key they made (keyrack officer keygen), and exits. After
// a colon, an officer's TLS client certificate (PEM) is bound to them: an
// appliance with tls.officer_client_cert takes their logins only over a
// connection presenting it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/appliance/httpapi"
	"github.com/keyrack/keyrack/appliance/officerkey"
	"github.com/keyrack/keyrack/appliance/store"
	"github.com/keyrack/keyrack/appliance/wire"
	"github.com/keyrack/keyrack/hsm"
)

func main() {
	os.Exit(run())
}

func run() int {
	tuneGC()
	configPath := flag.String("config", "", "configuration file (JSON)")
	devDir := flag.String("dev", "", "development mode: keep a dev SoftHSM token, config and demo data in this directory")
	listen := flag.String("listen", "", "with -dev on first start: the API address (default 127.0.0.1:8080)")
	devToken := flag.String("dev-token", devTokenInProcess, "with -dev: where the dev token runs: "+devTokenInProcess+" (SoftHSM loaded by keyrackd) or "+devTokenRemote+" (p11-kit-server in its own process; keyrackd loads p11-kit-client.so)")
	devMakeToken := flag.String("dev-make-token", "", "internal (-dev-token remote): make the dev token in this directory and exit")
	version := flag.Bool("version", false, "print the version and exit")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile to this file until shutdown (performance work)")
	traceFile := flag.String("trace", "", "write a Go execution trace to this file until shutdown (performance work: scheduling latency)")
	bootstrap := flag.String("bootstrap-officers", "", "enrol the first officers of an appliance that has none, each with the public key they made and optionally their TLS client certificate (NAME=PUBKEYFILE[:CERTFILE],...; keyrack officer keygen), and exit")
	restore := flag.String("restore", "", "put this backup (keyrack backup) in place as the store of an appliance that has none, after verifying it, and exit")
	sinceHead := flag.String("since-head", "", "with -restore: a head saved outside the store (keyrack audit head); a backup older than it is refused")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	if *version {
		fmt.Println(wire.Version)
		return 0
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Error("cpu profile", "err", err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Error("cpu profile", "err", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	if *traceFile != "" {
		f, err := os.Create(*traceFile)
		if err != nil {
			log.Error("trace", "err", err)
			return 1
		}
		if err := trace.Start(f); err != nil {
			log.Error("trace", "err", err)
			return 1
		}
		defer trace.Stop()
	}
	if *devMakeToken != "" {
		if err := makeDevToken(*devMakeToken); err != nil {
			fmt.Fprintf(os.Stderr, "keyrackd: -dev-make-token: %v\n", err)
			return 1
		}
		return 0
	}
	if (*configPath == "") == (*devDir == "") {
		fmt.Fprintln(os.Stderr, "keyrackd: give exactly one of -config FILE or -dev DIR")
		flag.Usage()
		return 2
	}
	var dev devSetup
	if *devDir != "" {
		var err error
		if dev, err = prepareDev(*devDir, *listen, *devToken, log); err != nil {
			log.Error("preparing the development appliance", "err", err)
			return 1
		}
		if dev.stop != nil {
			defer dev.stop()
		}
		*configPath = dev.config
	}
	cfg, err := appliance.LoadConfig(*configPath)
	if err != nil {
		log.Error("loading configuration", "err", err)
		return 1
	}
	if dev.module != "" {
		cfg.Token.Module = dev.module
	}
	if *restore != "" {
		msg, err := restoreStore(context.Background(), cfg, *restore, *sinceHead)
		if err != nil {
			fmt.Fprintf(os.Stderr, "keyrackd: -restore: %v\n", err)
			return 1
		}
		fmt.Println(msg)
		return 0
	}
	if *bootstrap != "" {
		officers, err := readOfficerKeys(*bootstrap)
		if err != nil {
			fmt.Fprintf(os.Stderr, "keyrackd: -bootstrap-officers: %v\n", err)
			return 2
		}
		return bootstrapOfficers(cfg, officers, log)
	}
	if err := serve(cfg, *devDir, log); err != nil {
		log.Error("keyrackd stopped", "err", err)
		return 1
	}
	return 0
}

// listener takes the socket systemd passed (socket activation) or opens
// cfg.Listen.
func listener(cfg appliance.Config, log *slog.Logger) (net.Listener, error) {
	lns, err := activation.Listeners()
	if err != nil {
		return nil, fmt.Errorf("socket activation: %w", err)
	}
	if len(lns) > 1 {
		return nil, fmt.Errorf("socket activation passed %d sockets; keyrackd takes one", len(lns))
	}
	if len(lns) == 1 && lns[0] != nil {
		log.Info("using the socket passed by systemd", "addr", lns[0].Addr().String())
		return lns[0], nil
	}
	return net.Listen("tcp", cfg.Listen)
}

// watchdog pings systemd's watchdog while the token answers. When the
// token stays away, the pings stop and systemd restarts the daemon after
// WatchdogSec: a loud failure instead of an appliance that only says 503.
func watchdog(ctx context.Context, mod *hsm.Module, log *slog.Logger) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return
	}
	t := time.NewTicker(interval / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, interval/3)
		st := mod.Check(cctx)
		cancel()
		if st.Up {
			daemon.SdNotify(false, daemon.SdNotifyWatchdog)
		} else {
			log.Warn("token down: withholding the watchdog ping", "reason", st.Error)
		}
	}
}

func openStore(ctx context.Context, cfg appliance.Config) (*store.DB, error) {
	if cfg.Store.Driver == "postgres" {
		return store.OpenPostgres(ctx, cfg.Store.DSN)
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Store.Path), 0o700); err != nil {
		return nil, err
	}
	return store.OpenSQLite(ctx, cfg.Store.Path)
}

// bootstrapOfficer is an officer named on -bootstrap-officers, with the
// public key read from their file.
type bootstrapOfficer struct {
	appliance.OfficerKey
	Fingerprint string
}

// readOfficerKeys reads -bootstrap-officers NAME=PUBKEYFILE[:CERTFILE],...:
// each officer's public key file, in authorized_keys form, and the TLS
// client certificate (PEM) to bind to them, if any.
func readOfficerKeys(arg string) ([]bootstrapOfficer, error) {
	var out []bootstrapOfficer
	seen := map[string]bool{}
	for _, item := range strings.Split(arg, ",") {
		name, files, ok := strings.Cut(strings.TrimSpace(item), "=")
		file, certFile, withCert := strings.Cut(files, ":")
		if !ok || name == "" || file == "" || withCert && certFile == "" {
			return nil, fmt.Errorf("%q: each officer is NAME=PUBKEYFILE[:CERTFILE], the public key they made with keyrack officer keygen and optionally their TLS client certificate (-bootstrap-officers alice=alice.pub,bob=bob.pub:bob.crt,carol=carol.pub); officers no longer get a credential from the appliance", item)
		}
		if seen[name] {
			return nil, fmt.Errorf("officer %q is named twice", name)
		}
		seen[name] = true
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("officer %s: %w", name, err)
		}
		pub, err := officerkey.ParsePublicKey(data)
		if err != nil {
			return nil, fmt.Errorf("officer %s: %s: %w", name, file, err)
		}
		o := bootstrapOfficer{OfficerKey: appliance.OfficerKey{Name: name, PublicKey: officerkey.Authorized(pub)},
			Fingerprint: officerkey.Fingerprint(pub)}
		if withCert {
			if o.CertSHA256, err = officerkey.CertFileSHA256(certFile); err != nil {
				return nil, fmt.Errorf("officer %s: %w", name, err)
			}
		}
		out = append(out, o)
	}
	return out, nil
}

func bootstrapOfficers(cfg appliance.Config, officers []bootstrapOfficer, log *slog.Logger) int {
	ctx := context.Background()
	db, err := openStore(ctx, cfg)
	if err != nil {
		log.Error("opening the store", "err", err)
		return 1
	}
	defer db.Close()
	if len(officers) < cfg.Officers.Quorum {
		log.Error("fewer officers than the quorum: no ceremony could ever pass", "officers", len(officers), "quorum", cfg.Officers.Quorum)
		return 1
	}
	keys := make([]appliance.OfficerKey, len(officers))
	for i, o := range officers {
		keys[i] = o.OfficerKey
	}
	if err := appliance.BootstrapOfficers(ctx, db, keys); err != nil {
		log.Error("bootstrapping officers", "err", err)
		return 1
	}
	fmt.Println("Officers enrolled with their public keys (each logs in with the key they keep; nothing secret was made):")
	for _, o := range officers {
		if o.CertSHA256 != "" {
			fmt.Printf("%s\t%s\tclient certificate sha256 %s\n", o.Name, o.Fingerprint, o.CertSHA256)
		} else {
			fmt.Printf("%s\t%s\n", o.Name, o.Fingerprint)
		}
	}
	return 0
}

func serve(cfg appliance.Config, devDir string, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	mod, err := hsm.Open(cfg.Token.HSM())
	if err != nil {
		return fmt.Errorf("opening the token: %w%s", err, openTokenHint(cfg.Token, err))
	}
	defer func() {
		if err := mod.Close(); err != nil {
			log.Warn("closing the token", "err", err)
		}
	}()
	st := mod.Check(ctx)
	log.Info("token ready", "label", st.Label, "serial", st.Serial, "model", st.Model, "sessions", st.Sessions)
	if cfg.Token.SigningPriority == appliance.PriorityIdle {
		log.Info("signing at idle priority", "threads", st.Sessions, "gomaxprocs", runtime.GOMAXPROCS(0))
	}

	db, err := openStore(ctx, cfg)
	if err != nil {
		return fmt.Errorf("opening the store: %w", err)
	}
	defer db.Close()
	app, err := appliance.New(ctx, cfg, mod, db, log)
	if err != nil {
		return err
	}
	if cfg.Dev && devDir != "" {
		if err := app.EnsureDemo(ctx, devDir); err != nil {
			return err
		}
	}
	api := httpapi.New(app)

	ln, err := listener(cfg, log)
	if err != nil {
		return err
	}
	log.Info("keyrackd listening", "addr", ln.Addr().String(), "version", wire.Version)
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("sd_notify READY", "err", err)
	}
	// Serve stops on its own context, cancelled only after STOPPING=1 is
	// sent: on the signal's context an idle server could finish draining
	// before this select saw the signal, and the select, finding both
	// ready, could then skip STOPPING=1 and the log line.
	serving, stopServing := context.WithCancel(context.Background())
	defer stopServing()
	errc := make(chan error, 1)
	go func() { errc <- api.Serve(serving, ln) }()
	go watchdog(ctx, mod, log)
	select {
	case <-ctx.Done():
		log.Info("stopping: draining requests")
		_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
		stopServing()
		err = <-errc
		// A last checkpoint signs what the drained requests wrote, so a
		// head saved after a clean stop covers every event.
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, _, cerr := app.Checkpoint(cctx); cerr != nil {
			log.Warn("the last audit checkpoint before stopping failed", "err", cerr)
		}
		cancel()
	case err = <-errc:
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	// The minute's aggregated audit counts (failed logins, refusals of
	// stopped keys and clients) would go with the process: audit them
	// now, the requests drained, the store still open.
	app.FlushAuditAggregates(context.Background())
	log.Info("keyrackd stopped cleanly")
	return nil
}

// openTokenHint is what an operator needs to know beyond err: a refused
// scheduling change under idle-priority signing is the service's system
// call filter, which the SoftHSM drop-in relaxes.
func openTokenHint(t appliance.TokenConfig, err error) string {
	if t.SigningPriority == appliance.PriorityIdle && errors.Is(err, syscall.EPERM) {
		return " (token.signing_priority idle needs sched_setattr: under systemd, install the SoftHSM drop-in with SystemCallFilter=sched_setattr)"
	}
	return ""
}
