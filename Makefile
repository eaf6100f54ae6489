# Quest — the two commands: `make run` and `make test`.
GO       ?= go
BIN      := .quest/bin/quest
TESTROOT := .quest/test

# Static checkers: pinned versions, built once into a cache outside the
# clone (CI and later runs reuse them).
TOOLS               ?= $(HOME)/.cache/quest-tools
STATICCHECK_VERSION := v0.8.2
GOSEC_VERSION       := v2.30.0
STATICCHECK         := $(TOOLS)/staticcheck-$(STATICCHECK_VERSION)/staticcheck
GOSEC               := $(TOOLS)/gosec-$(GOSEC_VERSION)/gosec

.PHONY: build run test lint lab faults faults-ha lab-pgpool bench pgpool2 down purge status compose-up compose-down compose-config compose-test fmt vet clean

## build: compile the quest binary into .quest/bin
build:
	$(GO) build -o $(BIN) ./cmd/quest

# make run's ports and address, set on the command line: make run PORT=8081 PGPORT=55320.
# Plain assignments, not ?=: PGPORT is also libpq's variable (psql's default port) and
# PORT is often exported for other tools, and neither should move Quest by accident.
PORT   = 8080
PGPORT = 54320
HOST   = 127.0.0.1

## run: bring the local cluster up (or reuse it), migrate, seed, serve on http://localhost:8080
##   (the lab on /lab). PORT=8081: the app's port; PGPORT=55320: the leader's port, the followers
##   on the next ones (a cluster that exists keeps its ports: make purge first to move it);
##   HOST=0.0.0.0 shares the app with the network (default: this machine only)
run: build
	$(BIN) cluster up --port $(PGPORT)
	$(BIN) migrate up
	$(BIN) seed
	$(BIN) serve --addr $(HOST):$(PORT)

## test: vet, staticcheck and the whole suite (fuzz seed corpora included);
## leftover test clusters are swept whatever the result
test: build $(STATICCHECK)
	@status=0; \
	$(GO) vet ./... && $(STATICCHECK) ./... && $(GO) test -race -count=1 -timeout 9m ./... || status=$$?; \
	$(BIN) cluster sweep $(TESTROOT) || status=1; \
	exit $$status

$(STATICCHECK):
	GOBIN=$(dir $@) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

$(GOSEC):
	GOBIN=$(dir $@) $(GO) install github.com/securego/gosec/v2/cmd/gosec@$(GOSEC_VERSION)

## lint: gosec (heavy to build, so not in make test). Rules left out, and why:
##  G204/G702 the launcher runs PostgreSQL's own tools, pgpool and psql, with paths it found or was given;
##  G304/G703 files are the operator's: state dirs, --out, --update;
##  G301/G306 directories and results are not secret (secrets are written 0600 where they are);
##  G104      the errors left unchecked are best-effort clean-ups and writes to a client that may have gone.
## Other findings carry a "#nosec RULE -- why" comment where they stand.
lint: $(GOSEC)
	$(GOSEC) -quiet -exclude-dir=.quest -exclude=G204,G702,G304,G703,G301,G306,G104 ./...

## lab: the full lag experiment against the local cluster; rewrites docs/lab.md's table
lab: build
	$(BIN) cluster up --port $(PGPORT)
	$(BIN) lab run --update docs/lab.md

## lab-pgpool: the same beside pgpool-II (installed from Debian's pgpool2 when missing, as root);
## rewrites docs/pgpool.md's table
lab-pgpool: build pgpool2
	$(BIN) cluster up --port $(PGPORT)
	$(BIN) lab run --via-pgpool --strategies random,causal --update docs/pgpool.md

## bench: the query-level benchmark, every strategy interleaved with the direct row, 5 repetitions,
## beside pgpool-II (~7 min); rewrites docs/performance.md's table
bench: build pgpool2
	$(BIN) cluster up --port $(PGPORT)
	$(BIN) lab bench --via-pgpool --repeat 5 --update docs/performance.md

pgpool2:
	@[ -x /usr/sbin/pgpool ] || command -v pgpool >/dev/null || { \
	  echo "installing pgpool2 (its service is kept from starting)"; \
	  made=0; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made=1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgpool2; \
	  status=$$?; [ $$made = 0 ] || rm -f /usr/sbin/policy-rc.d; exit $$status; }

## faults: the fault scenarios under load against the local cluster; rewrites docs/faults.md's table
faults: build
	$(BIN) cluster up --port $(PGPORT)
	$(BIN) lab faults --update docs/faults.md

## faults-ha: the HA fault table on Patroni clusters the lab starts and removes (leader crashed under
## asynchronous replication and synchronous_mode, crashed member brought back, switchover, leader hung
## 20 s, leader's Patroni killed, split brain; needs patroni and etcd; ~3.5 min, on free ports); rewrites
## docs/ha.md's table
faults-ha: build
	$(BIN) lab faults --ha --update docs/ha.md

## down: stop the local cluster (data kept); purge: stop it and delete its data (the next
## make run creates it anew, on PGPORT)
down: build
	$(BIN) cluster down

purge: build
	$(BIN) cluster down --purge

## status: the local cluster's nodes, ports, roles and replay state
status: build
	$(BIN) cluster status

## compose-up: the same cluster and app on Docker (needs a Docker engine)
compose-up:
	GOPROXY=$$(go env GOPROXY 2>/dev/null) docker-compose up --build -d
	@echo "Quest on Docker: http://localhost:8080"

compose-down:
	docker-compose down

compose-config:
	docker-compose config -q

## compose-test: build, start, check and take down the compose stack (root; starts dockerd if none runs)
compose-test:
	.ci/compose-test

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

clean:
	rm -rf .quest/bin
