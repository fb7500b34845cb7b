GO ?= go

.PHONY: build test vet fuzz

build:
	$(GO) build -o bin/ ./cmd/...

vet:
	$(GO) vet ./...

test: vet
	$(GO) test -race -timeout 15m ./...
