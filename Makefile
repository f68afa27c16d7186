# keyrack. `make run` starts a dev appliance, `make test` runs every test.
GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/keyrack/keyrack/appliance.Version=$(VERSION)
DEVDIR  ?= var/dev
LISTEN  ?= 127.0.0.1:8080

.PHONY: all build run test bench lint deps clean

all: build

deps:
	@./softhsm/install-deps.sh

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/keyrackd ./cmd/keyrackd
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/keyrack ./cmd/keyrack

# Development appliance: dev SoftHSM token, config and demo data under
# $(DEVDIR), made on first start and reused afterwards.
run: deps build
	./bin/keyrackd -dev $(DEVDIR) -listen $(LISTEN)

# Every test, against real SoftHSM tokens made fresh in temp dirs.
test: deps lint
	$(GO) test -count=1 ./...

# Token signing speed with 1, 2 and 4 concurrent callers (2 sessions), then
# serial assertions next to raw token signatures in one run, and the cost
# of the self-check every signed assertion goes through.
bench: deps
	$(GO) test -run '^$$' -bench . -benchtime 3s -cpu 1,2,4 ./hsm/
	$(GO) test -run '^$$' -bench . -benchtime 3s -cpu 2 ./appliance/assertion/

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin var
