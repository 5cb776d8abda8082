# Meridian — multi-region OAuth 2.0 / OpenID Connect federation gateway.
GO      ?= go
BIN     := bin
CONFIG  ?= configs/regions.yaml
PKGS    := ./...

.PHONY: all build run test scim-client test-race test-faults lint bench bench-compare bench-node bench-hub clean

all: build

build: ## build the binaries into ./bin
	$(GO) build -o $(BIN)/ ./cmd/... ./examples/...

run: build ## run a local three-region federation on embedded stores
	$(BIN)/localfed --config $(CONFIG) --bin $(BIN)

test: scim-client ## the whole suite against the machine's PostgreSQL, MariaDB and Redis
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 20m $(PKGS)

SCIMCLIENT := region/node/testdata/scimclient
scim-client: ## the independent SCIM client TestSCIMIndependentClient drives (SCIMMY, pinned by package-lock.json)
	@if [ -f $(SCIMCLIENT)/node_modules/scimmy/package.json ]; then :; \
	elif command -v npm >/dev/null; then (cd $(SCIMCLIENT) && npm ci --no-audit --no-fund --silent); \
	else echo 'npm not found: TestSCIMIndependentClient skips (and fails under CI=true); apt-get install nodejs npm'; fi

test-race: ## the suite under the race detector
	$(GO) test -race -count=1 -timeout 30m $(PKGS)

test-faults: ## the fault and abuse suite (also part of make test)
	$(GO) test -count=1 -timeout 10m -run 'Fault|Abuse' $(PKGS)

lint: ## gofmt, go vet and staticcheck
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo 'gofmt: files above need formatting'; exit 1; }
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)

bench: ## micro-benchmarks; with REV=<git rev> also the deployed binaries vs REV, interleaved (bench-compare, bench-node)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./routing/ ./region/... ./lookup/... ./geodns/...
	@if [ -n "$(REV)" ]; then scripts/bench-routed.sh $(REV) && scripts/bench-node.sh $(REV) && PG=1 scripts/bench-node.sh $(REV); fi

bench-compare: ## deployed routed hop vs a git revision, one interleaved wrk run: make bench-compare REV=main
	scripts/bench-routed.sh $(REV)

bench-node: ## issuance + introspection at one node vs a git revision, one interleaved wrk run per backend: make bench-node REV=75f78c1
	scripts/bench-node.sh $(REV)
	PG=1 scripts/bench-node.sh $(REV)

bench-hub: ## hub lookups, bucket layout vs one key per user, alternating runs with ratios and medians (USERS=1000000 for a larger table)
	scripts/bench-hub.sh

clean:
	rm -rf $(BIN) data
