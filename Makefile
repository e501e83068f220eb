# Sprockets API. `make help` lists the targets.

GO       ?= go
BIN      := bin
PROGRAMS := writer projector reader
# Debian packages the local topology and the tests run from (chromium: the
# dashboard's test in a real browser).
DEB_PACKAGES := postgresql redis-server nats-server haproxy wrk prometheus chromium
# Commands the tests run, each with the Debian package that has it: node and
# npm run the pinned OpenAPI linter (tools/spectral). Commands, not packages:
# NodeSource's nodejs package holds npm.
DEB_COMMANDS := node:nodejs npm:npm

.DEFAULT_GOAL := help
COMPOSE  ?= docker compose
READERS  ?= 2

.PHONY: help build run test test-short bench soak fuzz vet fmt deps clean \
	up down logs scale local-build local-run local-load-data compose-check env-secrets

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build the writer, projector and reader into bin/
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(PROGRAMS))

run: deps build ## run the whole topology locally, seeded, behind the edge on :8000 (data in .run/); Ctrl-C stops it
	$(GO) build -o $(BIN)/ ./internal/devstack/localrun
	$(BIN)/localrun -dir .run -bin $(BIN) -seeds seeds

test: deps vet ## run every test (unit, integration, end to end) with the race detector
	E2E_RACE=1 $(GO) test -race -count=1 -timeout 30m ./...

test-short: ## run the tests without the race detector (faster while working)
	$(GO) test -count=1 -timeout 20m ./...

bench: deps ## measure cached reads, creates and write-to-visible delay against baselines
	$(GO) test -tags bench -run '^$$' -bench . -benchtime 1x -timeout 30m ./internal/bench

SOAK_DURATION ?= 10m
soak: deps ## run a mixed load with faults (kills, restarts, pauses) for SOAK_DURATION (10m), then check nothing was lost or leaked
	SOAK_DURATION=$(SOAK_DURATION) $(GO) test -tags soak -run '^TestSoak$$' -count=1 -v -timeout 60m ./internal/e2e

FUZZTIME ?= 1m
# Every fuzz target: package and name. make test runs their seeds.
FUZZ_TARGETS := ./internal/httpapi/writer:FuzzWriteRequests ./internal/httpapi/reader:FuzzReadRequests \
	./internal/httpapi:FuzzAccessLogMatchesSlog ./internal/httpapi:FuzzPathChecksMatchTheirPatterns ./internal/publicid:FuzzDecode ./internal/consistency:FuzzParse ./internal/events:FuzzDecode ./internal/auth:FuzzBearer

fuzz: ## run each fuzz target for FUZZTIME (1m by default): request decoding, tokens, events
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; echo "--- $$name ($$pkg)"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	done

vet: ## go vet and a gofmt check
	$(GO) vet ./...
	$(GO) vet -tags bench ./internal/bench
	$(GO) vet -tags soak ./internal/e2e
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "not gofmt-ed:"; echo "$$out"; exit 1; fi

fmt: ## gofmt every file
	gofmt -w .

# deps is the first step of run, test and bench: a fresh machine needs only
# those two commands. It installs nothing when nothing is missing, and
# asks for root rather than trying without.
deps: ## install the Debian packages the tests and `make run` need, if any is missing (as root; run, test and bench call it)
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done; \
		for c in $(DEB_COMMANDS); do command -v $${c%%:*} >/dev/null 2>&1 || echo $${c##*:}; done); \
	missing=$$(echo $$missing); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" -ne 0 ]; then \
		echo "deps: missing Debian packages: $$missing"; \
		echo "deps: not root, so nothing was installed; run 'sudo make deps' (or apt-get install $$missing) and try again"; \
		exit 1; fi; \
	echo "deps: installing the missing Debian packages: $$missing"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing

# ---- docker compose (needs a Docker engine) -----------------------------------

up: compose-check env-secrets ## start the compose topology in the background: http://localhost:8000
	$(COMPOSE) up --build --detach --wait

# The secrets docker-compose.yml refuses to start without. Each new one is
# "s" and 64 hex digits: a value that starts with a digit may not parse as a
# NATS configuration variable (nats-server reads 12e5... as a number).
COMPOSE_SECRETS := CONSISTENCY_KEY ID_KEY POSTGRES_PASSWORD REPLICATION_PASSWORD REDIS_PASSWORD NATS_PASSWORD GRAFANA_ADMIN_PASSWORD

env-secrets: ## write a new random value to .env for each compose secret it lacks (docker compose refuses to start without them)
	@touch .env; for name in $(COMPOSE_SECRETS); do \
		grep -Eq "^$$name=[^[:space:]#]" .env && continue; \
		grep -v "^$$name=" .env > .env.tmp || true; mv .env.tmp .env; \
		echo "$$name=s$$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >> .env; \
		echo "env-secrets: wrote a new $$name to .env"; \
	done

down: compose-check env-secrets ## stop the compose topology (data volumes are kept; add -v to remove them)
	$(COMPOSE) down

logs: compose-check env-secrets ## follow the compose topology's logs
	$(COMPOSE) logs --follow

scale: compose-check env-secrets ## run READERS=N readers behind the edge (default 2)
	$(COMPOSE) up --detach --wait --scale reader=$(READERS)

local-build: compose-check env-secrets ## (original name) build the images
	$(COMPOSE) build

local-run: compose-check env-secrets ## (original name) run everything in the foreground; then open localhost:8000/api/factories
	$(COMPOSE) up --build

local-load-data: compose-check env-secrets ## (original name) load the seed data again (idempotent: nothing is duplicated)
	$(COMPOSE) run --rm migrate

compose-check: ## say whether docker compose and a Docker engine are available
	@$(COMPOSE) version >/dev/null 2>&1 || { echo "docker compose is not available here: install Docker, or use 'make run' to run without it"; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "no Docker engine answers: start Docker, or use 'make run' to run without it"; exit 1; }

clean: ## remove built binaries and the local run's data
	rm -rf $(BIN) .run
