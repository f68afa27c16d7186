// Command keyrackd is the keyrack signing appliance daemon.
//
//	keyrackd -config /etc/keyrack/keyrackd.json
//	keyrackd -dev var/dev            # development: dev SoftHSM token, demo data
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
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/keyrack/keyrack/appliance"
	"github.com/keyrack/keyrack/hsm"
)

func main() {
	os.Exit(run())
}

func run() int {
	configPath := flag.String("config", "", "configuration file (JSON)")
	devDir := flag.String("dev", "", "development mode: keep a dev SoftHSM token, config and demo data in this directory")
	listen := flag.String("listen", "", "with -dev on first start: the API address (default 127.0.0.1:8080)")
	version := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	if *version {
		fmt.Println(appliance.Version)
		return 0
	}
	if (*configPath == "") == (*devDir == "") {
		fmt.Fprintln(os.Stderr, "keyrackd: give exactly one of -config FILE or -dev DIR")
		flag.Usage()
		return 2
	}
	if *devDir != "" {
		p, err := prepareDev(*devDir, *listen, log)
		if err != nil {
			log.Error("preparing the development appliance", "err", err)
			return 1
		}
		*configPath = p
	}
	cfg, err := appliance.LoadConfig(*configPath)
	if err != nil {
		log.Error("loading configuration", "err", err)
		return 1
	}
	if err := serve(cfg, log); err != nil {
		log.Error("keyrackd stopped", "err", err)
		return 1
	}
	return 0
}

func serve(cfg appliance.Config, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	mod, err := hsm.Open(cfg.Token.HSM())
	if err != nil {
		return fmt.Errorf("opening the token: %w", err)
	}
	defer func() {
		if err := mod.Close(); err != nil {
			log.Warn("closing the token", "err", err)
		}
	}()
	st := mod.Check(ctx)
	log.Info("token ready", "label", st.Label, "serial", st.Serial, "model", st.Model, "sessions", st.Sessions)

	if cfg.Dev {
		k, created, err := appliance.EnsureDemo(ctx, mod)
		if err != nil {
			return err
		}
		log.Info("demo data", "serial_key", k.Label(), "key_id", fmt.Sprintf("%x", k.ID()), "created", created)
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	srv := appliance.NewServer(cfg, mod, log)
	log.Info("keyrackd listening", "addr", ln.Addr().String(), "version", appliance.Version)
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("sd_notify READY", "err", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ctx, ln) }()
	select {
	case <-ctx.Done():
		log.Info("stopping: draining requests")
		_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
		err = <-errc
	case err = <-errc:
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("keyrackd stopped cleanly")
	return nil
}
