# Quest — the two commands: `make run` and `make test`.
GO       ?= go
BIN      := .quest/bin/quest
TESTROOT := .quest/test

.PHONY: build run test lab lab-pgpool pgpool2 down purge status compose-up compose-down compose-config fmt vet clean

## build: compile the quest binary into .quest/bin
build:
	$(GO) build -o $(BIN) ./cmd/quest

## run: bring the local cluster up (or reuse it), migrate, seed, serve on http://localhost:8080
run: build
	$(BIN) cluster up
	$(BIN) migrate up
	$(BIN) seed
	$(BIN) serve

## test: vet and the whole suite; leftover test clusters are swept whatever the result
test: build
	@status=0; \
	$(GO) vet ./... && $(GO) test -count=1 -timeout 9m ./... || status=$$?; \
	$(BIN) cluster sweep $(TESTROOT) || status=1; \
	exit $$status

## lab: the full lag experiment against the local cluster; rewrites the README's table
lab: build
	$(BIN) cluster up
	$(BIN) lab run --readme README.md

## lab-pgpool: the same beside pgpool-II (installed from Debian's pgpool2 when missing, as root)
lab-pgpool: build pgpool2
	$(BIN) cluster up
	$(BIN) lab run --via-pgpool --strategies random,causal --readme README.md

pgpool2:
	@[ -x /usr/sbin/pgpool ] || command -v pgpool >/dev/null || { \
	  echo "installing pgpool2 (its service is kept from starting)"; \
	  made=0; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made=1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgpool2; \
	  status=$$?; [ $$made = 0 ] || rm -f /usr/sbin/policy-rc.d; exit $$status; }

## down: stop the local cluster (data kept); purge: stop it and delete its data
down: build
	$(BIN) cluster down

purge: build
	$(BIN) cluster down --purge

status: build
	$(BIN) cluster status

## compose-up: the same cluster and app on Docker (needs a Docker engine)
compose-up:
	docker-compose up --build -d
	@echo "Quest on Docker: http://localhost:8080"

compose-down:
	docker-compose down

compose-config:
	docker-compose config -q

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

clean:
	rm -rf .quest/bin
