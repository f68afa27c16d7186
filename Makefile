# keyrack. `make run` starts a dev appliance, `make test` runs every test.
GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# The link flags of a build of version $(1): bench-compare builds an older
# revision with the same ones.
ldflags = -X github.com/keyrack/keyrack/appliance/wire.Version=$(1)
LDFLAGS := $(call ldflags,$(VERSION))
DEVDIR  ?= var/dev
LISTEN  ?= 127.0.0.1:8080
# Where the dev token runs: inprocess (SoftHSM loaded by keyrackd) or remote
# (p11-kit-server in its own process, keyrackd loads p11-kit-client.so).
TOKEN   ?= inprocess

.PHONY: all build run test bench bench-compare lint deps clean install
PREFIX  ?= /usr
DESTDIR ?=

all: build

deps:
	@./softhsm/install-deps.sh

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/keyrackd ./cmd/keyrackd
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/keyrack ./cmd/keyrack

# Development appliance: dev SoftHSM token, config and demo data under
# $(DEVDIR), made on first start and reused afterwards. TOKEN=remote serves
# the same token from its own process (socket in $(DEVDIR)/p11-kit).
run: deps build
	./bin/keyrackd -dev $(DEVDIR) -dev-token $(TOKEN) -listen $(LISTEN)

# Every test, against real SoftHSM tokens made fresh in temp dirs; then
# snapd's own device manager registering devices against a dev keyrackd
# (tests/snapd, its own module, which ./... does not reach).
test: deps lint
	$(GO) test -count=1 ./...
	cd tests/snapd && $(GO) vet ./... && $(GO) test -count=1 ./...

# Serial issuance against the token's limit (cmd/keyrack-bench: raw token,
# in-process Go RSA, end to end through keyrackd at concurrency 1/4/8/32,
# daemon memory; last line is the summary), then the export of 10,000 and
# 100,000 signing-log rows (time, peak heap and RSS: flat memory), then the
# micro-benchmarks.
bench: deps build
	$(GO) build -o bin/keyrack-bench ./cmd/keyrack-bench
	./bin/keyrack-bench -keyrackd bin/keyrackd
	$(GO) test -run '^$$' -bench BenchmarkExportSigningLog -benchtime 1x ./cmd/keyrack/
	$(GO) test -run '^$$' -bench . -benchtime 3s -cpu 1,2,4 ./hsm/
	$(GO) test -run '^$$' -bench . -benchtime 3s -cpu 2 ./appliance/assertion/

# Two keyrackd builds measured in turn on this host (cmd/keyrack-bench
# -compare, compare.go): the current tree's as bin/keyrackd (after) and
# revision BEFORE's as bin/keyrackd-before, exported with git archive (no
# worktree left behind) and built the same way, with its own version.
# Prints each round (raw, before, after, in turns), the token-out-of-process
# windows, and a last line "compare ... after_over_before=N ...
# cpu_after_over_before=N". COMPARE_FLAGS go to the bench (-rounds 9 ...).
BEFORE ?= HEAD~1
COMPARE_FLAGS ?=
bench-compare: deps build
	$(GO) build -o bin/keyrack-bench ./cmd/keyrack-bench
	@set -e; rev=$$(git rev-parse --verify '$(BEFORE)^{commit}'); \
	ver=$$(git describe --always $$rev); tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	echo "building keyrackd at $(BEFORE) ($$ver) as bin/keyrackd-before"; \
	git archive $$rev | tar -x -C "$$tmp"; \
	cd "$$tmp" && $(GO) build -ldflags "$(call ldflags,$$ver)" -o $(CURDIR)/bin/keyrackd-before ./cmd/keyrackd
	./bin/keyrack-bench -keyrackd bin/keyrackd -compare bin/keyrackd-before $(COMPARE_FLAGS)

# gofmt, go vet, and the package arrows of the README's Layout section.
lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd tests/snapd && $(GO) vet ./...
	GO=$(GO) ./scripts/check-layers.sh

# Binaries, units, sysusers/tmpfiles entries and an example configuration,
# under DESTDIR (packaging) or / (a real install; then run
# systemd-sysusers, systemd-tmpfiles --create and systemctl daemon-reload).
install: build
	install -D -m 0755 bin/keyrackd $(DESTDIR)$(PREFIX)/bin/keyrackd
	install -D -m 0755 bin/keyrack $(DESTDIR)$(PREFIX)/bin/keyrack
	install -D -m 0644 systemd/keyrackd.service $(DESTDIR)$(PREFIX)/lib/systemd/system/keyrackd.service
	install -D -m 0644 systemd/keyrackd.socket $(DESTDIR)$(PREFIX)/lib/systemd/system/keyrackd.socket
	install -D -m 0644 systemd/keyrack.sysusers $(DESTDIR)$(PREFIX)/lib/sysusers.d/keyrack.conf
	install -D -m 0644 systemd/keyrack.tmpfiles $(DESTDIR)$(PREFIX)/lib/tmpfiles.d/keyrack.conf
	install -D -m 0644 systemd/keyrackd.json.example $(DESTDIR)/etc/keyrack/keyrackd.json.example
	install -D -m 0644 systemd/keyrackd.service.d/hsm-devices.conf.example $(DESTDIR)$(PREFIX)/share/doc/keyrack/hsm-devices.conf.example
	install -D -m 0644 systemd/keyrackd.service.d/softhsm.conf.example $(DESTDIR)$(PREFIX)/share/doc/keyrack/softhsm.conf.example
	install -D -m 0644 systemd/keyrackd.service.d/remote-token.conf.example $(DESTDIR)$(PREFIX)/share/doc/keyrack/remote-token.conf.example
	install -D -m 0644 systemd/keyrack-token.service $(DESTDIR)$(PREFIX)/share/doc/keyrack/keyrack-token.service
	install -D -m 0644 systemd/keyrack-token.sysusers $(DESTDIR)$(PREFIX)/share/doc/keyrack/keyrack-token.sysusers
	install -D -m 0644 systemd/keyrack-token.tmpfiles $(DESTDIR)$(PREFIX)/share/doc/keyrack/keyrack-token.tmpfiles
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/keyrack/README.md

clean:
	rm -rf bin var
