# Strait: the one entry point for building, testing, benchmarking and the lab.
GO      ?= go
BIN     := $(CURDIR)/bin
CNI_BIN := $(BIN)/cni
PLUGIN_PKGS := github.com/containernetworking/plugins/plugins/meta/portmap \
	github.com/containernetworking/plugins/plugins/main/loopback \
	github.com/containernetworking/plugins/plugins/meta/bandwidth \
	github.com/containernetworking/plugins/plugins/main/bridge \
	github.com/containernetworking/plugins/plugins/ipam/host-local
TEST_FLAGS ?= -race -count=1 -timeout 45m

.PHONY: all build tools deps k8s crds bpf test test-unit lint bench bench-flows lab lab-down clean fuzz

all: build

## build: the agent, the CNI shim (installed as "strait"), straitctl, strait-lab
build:
	@mkdir -p $(CNI_BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./cmd/...
	cp $(BIN)/strait-cni $(CNI_BIN)/strait

## tools: the reference CNI plugins (v1.9.1, CNI 1.1.0) the tests chain and compare against
tools:
	@mkdir -p $(CNI_BIN)
	cd hack/tools && CGO_ENABLED=0 $(GO) build -trimpath -o $(CNI_BIN)/ $(PLUGIN_PKGS)

## deps: system packages the tests and the lab need (Debian; run as root)
deps:
	hack/install-deps.sh

## k8s: the Kubernetes binaries the lab and the API tier use (cached; ~6-11 min the first time)
k8s: build
	$(BIN)/strait-lab k8s-binaries

## test: everything: lint, unit, privileged (root), integration (API server) and end-to-end (lab) tests
test: build tools lint k8s fuzz
	STRAIT_BIN=$(BIN) $(GO) test $(TEST_FLAGS) ./...

## test-unit: the tests that need no root
test-unit:
	$(GO) test -race -count=1 ./internal/cni/... ./internal/ipam/... ./internal/agent/... ./api/...

## crds: regenerate deploy/crds, deploy/strait.yaml and the deepcopy code from api/v1alpha1
crds:
	$(GO) run ./hack/crdgen

## bpf: rebuild the eBPF fast path's object (internal/datapath/bpf/fastpath.o, committed) from its C source
bpf:
	hack/bpf-build.sh

## fuzz: bounded fuzzing of the IPFIX decoder, template cache and proxy path (FUZZTIME per target; longer by hand)
# Budgets are execution counts, not durations: Go 1.26's fuzz coordinator can fail a target with a bare
# "context deadline exceeded" when a -fuzztime duration expires (golang/go#75804, fixed in Go 1.27). Minimizing a
# new interesting input is capped too (the default is up to 60 s each, during which the target makes no progress).
FUZZTIME ?= 150000x
FUZZMINIMIZETIME ?= 500x
FUZZFLAGS = -run '^$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME)
fuzz:
	$(GO) test $(FUZZFLAGS) -fuzz '^FuzzDecode$$' ./internal/flow/ipfix/
	$(GO) test $(FUZZFLAGS) -fuzz '^FuzzTemplateCache$$' ./internal/flow/ipfix/
	$(GO) test $(FUZZFLAGS) -fuzz '^FuzzProxy$$' ./internal/aggregator/

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

## bench: benchmarks against the reference plugins (see docs/benchmarks.md)
bench: build tools bench-flows
	STRAIT_BIN=$(BIN) $(GO) test -p 1 -run '^$$' -bench . -benchtime 1x -count=1 -timeout 60m ./internal/datapath/ ./test/integration/

## bench-flows: the aggregator's proxy path against go-ipfix v0.17.0, same run (own module test/flowbench)
bench-flows:
	cd test/flowbench && $(GO) test -run '^$$' -bench . -benchtime 3x -count=1 -timeout 30m .

## lab: bring up the 3-node Kubernetes lab (see README)
lab: deps build tools
	$(BIN)/strait-lab up --nodes $(or $(NODES),3)

lab-down:
	$(BIN)/strait-lab down

clean:
	rm -rf $(BIN)
