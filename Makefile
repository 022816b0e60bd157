# berth: two commands on a fresh machine (as root):
#   make demo   set up if needed, then run the quickstart on the embedded engine
#   make test   set up if needed, then the whole suite with the race detector
GO ?= go
# The embedded engine applies seccomp profiles through libseccomp (cgo):
# every build and test of berth needs the seccomp tag.
export GOFLAGS += -tags=seccomp
GOTESTFLAGS ?= -race -count=1 -timeout 25m

.PHONY: demo test setup bench bench-run bench-memory bench-scale bench-volume bench-docker bench-image bench-registry bench-cri vet

demo: setup
	$(GO) run ./examples/quickstart

# Fuzz targets run briefly on every test run (one package per invocation).
# Minimizing a new input is cut short, or large seeds would spend the whole
# time being minimized. Go's engine sometimes ends a run whose time is up
# with "context deadline exceeded" and no failing input (a worker was
# still busy): that run, and only that, is tried once more. A failing
# input always fails the test.
FUZZTIME ?= 10s
FUZZ_TARGETS = ./volume:FuzzProbe
FUZZ_TARGETS += ./image:FuzzImport ./image/layer:FuzzAnalyze ./image/unpack:FuzzApply ./image/dockersave:FuzzParseManifest

test: setup vet
	$(GO) test $(GOTESTFLAGS) ./...
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t#*:} in $${t%%:*} for $(FUZZTIME)"; \
		fuzz() { $(GO) test -run='^$$' -fuzz="^$${t#*:}$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=1s "$${t%%:*}" 2>&1; }; \
		out=$$(fuzz); rc=$$?; echo "$$out"; \
		if [ $$rc -ne 0 ] && echo "$$out" | grep -q "context deadline exceeded" && ! echo "$$out" | grep -q "Failing input"; then \
			echo "fuzz: the engine stopped at the deadline with no failing input; once more"; \
			fuzz || exit 1; \
		elif [ $$rc -ne 0 ]; then exit 1; fi; \
	done

# The portable packages (and their internal dependencies) build and vet
# off Linux too: Linux-only calls live in _linux.go files.
PORTABLE = ./runtime/... ./volume/... ./image/...

vet:
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...
	GOOS=darwin $(GO) vet $(PORTABLE)
	GOOS=freebsd $(GO) vet $(PORTABLE)

# setup.sh is idempotent and quick when all is in place, so it always runs:
# it also restarts what a reboot stopped.
setup:
	./scripts/setup.sh

# Every row of the performance table, each with its peer measured in the
# same run: start latency (berthctl, and the library in process, against
# runc and lxc-execute), host memory per container (against LXC), 10,000
# containers at once, and image import (against docker load and tar).
bench: setup
	./scripts/bench-run.sh
	./scripts/bench-memory.sh
	./scripts/bench-scale.sh
	./scripts/bench-image.sh

bench-run: setup
	./scripts/bench-run.sh

bench-memory: setup
	./scripts/bench-memory.sh

bench-scale: setup
	./scripts/bench-scale.sh

bench-volume: setup
	./scripts/bench-volume.sh

bench-docker: setup
	./scripts/bench-docker.sh

bench-image: setup
	./scripts/bench-image.sh

bench-registry: setup
	./scripts/bench-registry.sh

# critest -benchmark against berth-cri and containerd's CRI, one after the
# other: BENCH_CRI_ARGS="SAMPLES ROUNDS" (default 20 1).
bench-cri: setup
	./scripts/bench-cri.sh $(BENCH_CRI_ARGS)
