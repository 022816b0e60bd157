# berth: two commands on a fresh machine (as root):
#   make demo   set up if needed, then run the quickstart on the embedded engine
#   make test   set up if needed, then the whole suite with the race detector
GO ?= go
# The embedded engine applies seccomp profiles through libseccomp (cgo):
# every build and test of berth needs the seccomp tag.
export GOFLAGS += -tags=seccomp
GOTESTFLAGS ?= -race -count=1 -timeout 25m

.PHONY: demo test setup bench bench-volume bench-docker bench-image vet

demo: setup
	$(GO) run ./examples/quickstart

# Fuzz targets run briefly on every test run (one package per invocation).
# Minimizing a new input is cut short: one still being minimized when the
# time is up fails the run ("context deadline exceeded"), and large seeds
# would spend the whole time being minimized.
FUZZTIME ?= 10s
FUZZ_TARGETS = ./volume:FuzzProbe
FUZZ_TARGETS += ./image:FuzzImport ./image/layer:FuzzAnalyze ./image/unpack:FuzzApply ./image/dockersave:FuzzParseManifest

test: setup vet
	$(GO) test $(GOTESTFLAGS) ./...
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t#*:} in $${t%%:*} for $(FUZZTIME)"; \
		$(GO) test -run='^$$' -fuzz="^$${t#*:}$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=1s "$${t%%:*}" || exit 1; \
	done

vet:
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...

# setup.sh is idempotent and quick when all is in place, so it always runs:
# it also restarts what a reboot stopped.
setup:
	./scripts/setup.sh

bench: setup
	./scripts/bench-run.sh

bench-volume: setup
	./scripts/bench-volume.sh

bench-docker: setup
	./scripts/bench-docker.sh

bench-image: setup
	./scripts/bench-image.sh
