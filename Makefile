# ferry — the entry point for building, testing and trying ferry.
# `make` alone lists the targets.

GO        ?= go
TOOLS_BIN := $(CURDIR)/.tools/bin
BIN       := $(CURDIR)/bin
STATICCHECK_VERSION := v0.8.2
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
	$(GO) build -o $(BIN)/ ./controller ./cmd/...

.PHONY: test
test: ## Run every test (unit, integration with real processes, fuzz seed corpora)
	$(GO) vet $(PKGS)
	$(GO) test $(TEST_FLAGS) $(PKGS)

.PHONY: lint
lint: $(TOOLS_BIN)/staticcheck ## gofmt, go vet and staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(TOOLS_BIN)/staticcheck $(PKGS)

$(TOOLS_BIN)/staticcheck:
	@mkdir -p $(TOOLS_BIN)
	GOFLAGS= GOBIN=$(TOOLS_BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

.PHONY: bench
bench: build ## Benchmarks: seal/open, 2 GiB backup and restore, peers (zstd|openssl); prints MB/s and peak RSS
	bench/install-peers.sh
	$(GO) test -run '^$$' -bench . -benchtime 3x ./internal/keys/ ./internal/backup/
	bench/backup-2g.sh

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 30s)
	@for t in $$($(GO) test -list '^Fuzz' ./internal/format/ | grep ^Fuzz); do \
		$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $${FUZZTIME:-30s} -fuzzminimizetime 1s ./internal/format/ || exit 1; done
	@for t in $$($(GO) test -list '^Fuzz' ./internal/keys/ | grep ^Fuzz); do \
		$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $${FUZZTIME:-30s} -fuzzminimizetime 1s ./internal/keys/ || exit 1; done

.PHONY: demo
demo: build ## Run the main job end to end on loopback (today: an offline backup, incremental, verify and restore round trip)
	deploy/demo-offline.sh

.PHONY: clean
clean: ## Remove build outputs
	rm -rf $(BIN)
