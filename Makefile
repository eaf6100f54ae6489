# Quest — the two commands: `make run` and `make test`.
GO       ?= go
BIN      := .quest/bin/quest
TESTROOT := .quest/test

.PHONY: build run test lab down purge status compose-up compose-down compose-config fmt vet clean

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
