GO ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo devel)

.PHONY: build run run-bills up readme-check test vet bench soak fuzz lint litestream

build: ## the binaries, nats-server included; --version says $(VERSION)
	$(GO) build -ldflags "-X github.com/paystream/paystream/internal/cli.Version=$(VERSION)" -o bin/ ./cmd/...

run: build ## the whole pipeline on embedded defaults, ending with a summary, a reconciliation of the day and an audit
	./scripts/run.sh

run-bills: build ## the same on the transfer-bills product: confirmations, expiries, cancels
	PRODUCT=bills ./scripts/run.sh

up: ## the sandbox and a processor on the demo config in the foreground until Ctrl-C (status page http://127.0.0.1:8091/); PRODUCT=bills for transfer bills
	./scripts/up.sh

readme-check: ## every CLI example of README.md, as written, against make up
	./scripts/readme-examples.sh

vet:
	$(GO) vet ./...

test: vet litestream ## vet, then every test with the race detector (litestream is built first: the replication tests run it)
	$(GO) test -race -timeout 20m ./...

STATICCHECK_VERSION := v0.8.2
STATICCHECK := bin/staticcheck-$(STATICCHECK_VERSION)/staticcheck

lint: vet $(STATICCHECK) ## gofmt, go vet, staticcheck $(STATICCHECK_VERSION) and go mod tidy: each must be clean
	@test -z "$$(gofmt -l .)" || { echo "gofmt -l: these files need gofmt -w:"; gofmt -l .; exit 1; }
	$(STATICCHECK) ./...
	$(GO) mod tidy -diff

# staticcheck, pinned: built once from the Go module proxy into bin/ (a new version, a new directory)
$(STATICCHECK):
	GOBIN=$(CURDIR)/$(@D) GOFLAGS= $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

LITESTREAM_VERSION := v0.5.18
LITESTREAM := bin/litestream-$(LITESTREAM_VERSION)/litestream

litestream: $(LITESTREAM) ## litestream $(LITESTREAM_VERSION), which replicates each ledger off the machine (docs/replication.md)

# litestream, pinned: built once from the Go module proxy into bin/ (a new version, a new directory);
# internal/replica.Version names the same version and builds it the same way when tests need it
$(LITESTREAM):
	GOBIN=$(CURDIR)/$(@D) GOFLAGS= $(GO) install github.com/benbjohnson/litestream/cmd/litestream@$(LITESTREAM_VERSION)

fuzz: ## each fuzz target for FUZZTIME
	./scripts/fuzz.sh $(or $(FUZZTIME),30s)

bench: ## micro-benchmarks with allocations, then the limit ratios (README "Performance"; about 28 min, 18 of them the 100k transfer-bills drain at 100/s)
	$(GO) test -run '^$$' -bench . -benchmem ./pkg/... ./internal/claims
	$(GO) run ./cmd/bench

soak: ## both rails (50k batch payouts, then 10k transfer bills), 3 processors on a 3-node JetStream cluster, SIGKILLs, faults, 429s (≤ 15 min)
	$(GO) run ./cmd/soak
