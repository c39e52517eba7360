# ferry — the entry point for building, testing and trying ferry.
# `make` alone lists the targets.

GO        ?= go
TOOLS_BIN := $(CURDIR)/.tools/bin
BIN       := $(CURDIR)/bin
STATICCHECK_VERSION := v0.8.2
# Proto toolchain. buf v1.72.0 is the newest whose go.mod needs no newer Go
# than ours (go 1.26.0; buf v1.73+ needs go 1.26.7). protoc-gen-go stays equal
# to google.golang.org/protobuf in go.mod (scripts/proto-check.sh checks).
BUF_VERSION                := v1.72.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
# One stamp per tool and version: bumping a version above reinstalls that tool,
# so generated code never comes from a stale plugin.
PROTO_TOOLS := $(CURDIR)/.tools/buf@$(BUF_VERSION) \
	$(CURDIR)/.tools/protoc-gen-go@$(PROTOC_GEN_GO_VERSION) \
	$(CURDIR)/.tools/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
# Packages whose tests run in `make test`.
PKGS      := ./...
TEST_FLAGS ?= -race -timeout 15m

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build the binaries into bin/
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./controller ./agent-source ./agent-target ./cmd/...

.PHONY: test
test: proto-check ## Run every test (unit, integration with real processes, fuzz seed corpora)
	$(GO) vet $(PKGS)
	$(GO) test $(TEST_FLAGS) $(PKGS)

.PHONY: lint
lint: $(TOOLS_BIN)/staticcheck $(PROTO_TOOLS) ## gofmt, go vet, staticcheck and buf lint
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(TOOLS_BIN)/staticcheck $(PKGS)
	cd proto && $(TOOLS_BIN)/buf lint

$(TOOLS_BIN)/staticcheck:
	@mkdir -p $(TOOLS_BIN)
	GOFLAGS= GOBIN=$(TOOLS_BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

$(CURDIR)/.tools/buf@$(BUF_VERSION):
	@mkdir -p $(TOOLS_BIN)
	GOFLAGS= GOBIN=$(TOOLS_BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	@rm -f $(CURDIR)/.tools/buf@* && touch $@

$(CURDIR)/.tools/protoc-gen-go@$(PROTOC_GEN_GO_VERSION):
	@mkdir -p $(TOOLS_BIN)
	GOFLAGS= GOBIN=$(TOOLS_BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	@rm -f $(CURDIR)/.tools/protoc-gen-go@* && touch $@

$(CURDIR)/.tools/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION):
	@mkdir -p $(TOOLS_BIN)
	GOFLAGS= GOBIN=$(TOOLS_BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	@rm -f $(CURDIR)/.tools/protoc-gen-go-grpc@* && touch $@

# buf runs from proto/ (buf.gen.yaml writes to ../internal/gen) and finds the
# plugins on PATH, so .tools/bin goes first.
.PHONY: proto
proto: $(PROTO_TOOLS) ## Regenerate Go code from proto/ with buf (buf lint, then buf generate)
	cd proto && PATH="$(TOOLS_BIN):$$PATH" $(TOOLS_BIN)/buf lint
	cd proto && PATH="$(TOOLS_BIN):$$PATH" $(TOOLS_BIN)/buf generate

.PHONY: proto-check
proto-check: $(PROTO_TOOLS) ## Fail when the committed generated code is stale (regenerates into a temp dir)
	@PATH="$(TOOLS_BIN):$$PATH" PROTOC_GEN_GO_VERSION=$(PROTOC_GEN_GO_VERSION) scripts/proto-check.sh

.PHONY: bench
bench: build ## Benchmarks: seal/open, 2 GiB backup and restore, peers (zstd|openssl); prints MB/s and peak RSS
	bench/install-peers.sh
	$(GO) test -run '^$$' -bench 'SealBlock|OpenBlock' -cpu 1 ./internal/backup/
	bench/backup-2g.sh
	bench/copy-2g.sh

.PHONY: bench-wan
bench-wan: build ## WAN-mode benchmark through a simulated 100 Mbit/s, 50 ms RTT link: new data, day-2 change vs rsync, re-copy from the cache
	bench/install-peers.sh
	bench/wan.sh

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 30s)
	@for p in ./internal/format/ ./internal/keys/ ./internal/grant/ ./internal/config/; do \
		for t in $$($(GO) test -list '^Fuzz' $$p | grep ^Fuzz); do \
			$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $${FUZZTIME:-30s} -fuzzminimizetime 1s $$p || exit 1; done; done

.PHONY: demo
demo: build ## Run the main job end to end on loopback: controller and both agents as separate processes, backup, two encrypted copies, verify, restore
	deploy/demo.sh

.PHONY: clean
clean: ## Remove build outputs
	rm -rf $(BIN)

.PHONY: demo-kms
demo-kms: build ## The copy demo with KMS encryption (Transit test server, or VAULT_ADDR/VAULT_TOKEN), with a rotate + rewrap
	deploy/demo-kms.sh

.PHONY: demo-offline
demo-offline: build ## The offline round trip: backup, incremental, verify and restore with no daemon
	deploy/demo-offline.sh

.PHONY: transit-dev
transit-dev: ## Run the Vault Transit test server in the foreground on 127.0.0.1:8200 (root token "root"; TRANSIT_LISTEN=ADDR to move it)
	$(GO) run ./cmd/transit-dev
