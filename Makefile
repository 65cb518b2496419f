# meshproxy build, test and run targets. `make test` is the one test command.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/seed722d2a70/meshproxy/internal/release.Version=$(VERSION)
BIN       := bin/meshproxy
# The sidecar build leaves out the Kubernetes tools (inject, injector,
# netpol): 4 MiB less idle RSS in every pod.
SIDECAR   := bin/meshproxy-sidecar
FUZZTIME  ?= 10s

.PHONY: all build test deps lint fuzz bench bench-destination microbench soak demo clean proto image push

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/meshproxy
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -tags sidecar -o $(SIDECAR) ./cmd/meshproxy

# image builds the proxy and controller images, each for linux/amd64 and
# linux/arm64, without a container daemon (cmd/meshimage, docs/images.md):
# OCI layouts in bin/image/NAME/ and OCI archives in bin/image/NAME.tar.
# The same commit gives the same digests: every timestamp is
# SOURCE_DATE_EPOCH, by default the commit's time. REGISTRY is the
# repository prefix of the image names; `make image REGISTRY=... push`
# pushes them (credentials from `docker login` or `podman login`).
REGISTRY  ?= ghcr.io/seed722d2a70
PLATFORMS ?= amd64,arm64
image:
	$(GO) run ./cmd/meshimage build -out bin/image -repository $(REGISTRY) -version $(VERSION) \
	  -platforms $(PLATFORMS) -iptables-roots $$(scripts/image-deps.sh $(subst $(comma), ,$(PLATFORMS)))

push:
	$(GO) run ./cmd/meshimage push -out bin/image -repository $(REGISTRY) -registry $(REGISTRY) -version $(VERSION)

comma := ,

# deps installs what the tests need (Debian packages, the SPIRE binaries from
# ../shared/spire) when missing; it is idempotent and quick when all is there.
deps:
	@scripts/deps.sh

# lint also refuses tracked ELF binaries and files over 1 MiB
# (scripts/check-tracked.sh).
lint:
	@scripts/check-tracked.sh
	@GO=$(GO) scripts/check-proto.sh
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags sidecar ./cmd/meshproxy

test: deps lint
	$(GO) test -race -count=1 -timeout 15m ./...

fuzz:
	@scripts/fuzz.sh $(FUZZTIME)

# bench measures meshproxy against no proxy, a minimal Go TLS tunnel,
# stunnel and haproxy (installed when missing by scripts/bench-deps.sh) and
# writes bench/results.md and bench/results.json; about 10 minutes on 2
# cores. BENCHFLAGS=-quick makes it a labelled smoke run of the tooling.
bench: build
	@scripts/bench-deps.sh
	$(GO) build -trimpath -o bin/meshbench ./cmd/meshbench
	bin/meshbench -meshproxy $(SIDECAR) -out bench $(BENCHFLAGS)
	@# A Service resolved by the destination controller against a static
	@# destination, in one run, on the Kubernetes test bed (root).
	$(GO) test -run '^$$' -bench KubeServiceVsStatic -benchtime 1000x -count 3 ./test/ | tee bench/services.txt

# bench-destination runs BenchmarkControllerScale: one destination
# controller process, 10 000 endpoints across 1 000 Services and 2 000
# subscribed clients on a real apiserver; about 2 minutes on 2 cores. The
# output goes to bench/destination.txt too; bench/destination.md reads it.
# MESHPROXY_SCALE_PROFILE=<dir> adds the controller's heap and CPU profiles.
bench-destination:
	bash -o pipefail -c "MESHPROXY_SCALE_BENCH=1 $(GO) test -v -run '^$$' -bench ControllerScale -benchtime 1x \
	  -timeout 20m ./destination/controller/ 2>&1 | tee bench/destination.txt"

# proto regenerates the destination API's Go code from its .proto with
# Debian's protoc and the plugin versions go.mod pins (the tool directive).
PROTO := destination/destinationpb/destination.proto
proto:
	@command -v protoc >/dev/null || { echo "protoc missing: apt-get install protobuf-compiler"; exit 1; }
	protoc --plugin=protoc-gen-go=$$($(GO) tool -n protoc-gen-go) \
	  --plugin=protoc-gen-go-grpc=$$($(GO) tool -n protoc-gen-go-grpc) \
	  --go_out=. --go_opt=paths=source_relative \
	  --go-grpc_out=. --go-grpc_opt=paths=source_relative $(PROTO)

# soak is the endurance run, not part of `make test`: two pods with SVIDs
# from a real SPIRE agent (60 s TTL, so they rotate all along) carrying
# HTTP/1 at 200 rps, Redis and gRPC streams for SOAK (30m; SOAK=10m for a
# short one), with a SPIRE agent restart and a flood of the inbound ports
# on the way. It fails on any failed request or reset, or when a proxy's
# RSS or goroutines grow after warm-up, and writes docs/soak.md and
# docs/soak.csv (TestSoak in test/soak_test.go). Root, about one core.
# SOAKTIMEOUT must exceed SOAK by the setup time (a minute or two).
# SOAKPROFILES=<dir> saves each proxy's heap profile, MemStats, /metrics
# and smaps_rollup there every minute, to tell a leak from the runtime.
SOAK         ?= 30m
SOAKTIMEOUT  ?= 2h
SOAKPROFILES ?=
soak: deps
	MESHPROXY_SOAK=$(SOAK) MESHPROXY_SOAK_REPORT=$(CURDIR)/docs/soak.md MESHPROXY_SOAK_VERSION=$(VERSION) \
	  MESHPROXY_SOAK_PROFILES=$(SOAKPROFILES) \
	  $(GO) test -count=1 -v -run '^TestSoak$$' -timeout $(SOAKTIMEOUT) ./test/

# microbench runs the Go micro-benchmarks of the hot paths.
microbench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

demo: build
	$(GO) build -trimpath -o bin/demoapp ./cmd/demoapp
	@scripts/demo.sh

clean:
	rm -rf bin .cache
