#!/usr/bin/env bash
# Splits the embedded engine's start of a container's init at the points the
# kernel sees (scripts/tracestart), on berthctl built from this tree with
# its inittrace on, so that the Go runtime's and the packages' initialization
# in the re-executed init shows as a step of its own. Needs perf.
# Usage: scripts/trace-start.sh [RUNS] (default 15).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-15}

work=$(mktemp -d /tmp/berth-trace.XXXXXX)
chmod 711 "$work"
trap 'rm -rf "$work"' EXIT

# As in bench-run.sh: the binary lives apart from the state, so that
# libcontainer seals it with an overlay instead of copying it.
mkdir -p "$work/bin"
go build -tags seccomp -ldflags=-X=runtime.godebugDefault=inittrace=1 -o "$work/bin/berthctl" ./examples/berthctl
go run -tags seccomp ./internal/fixture/mkrootfs "$work/rootfs"
# One untimed run warms the page cache.
"$work/bin/berthctl" --root "$work/state" run --rm --rootfs "$work/rootfs" -- /bin/true 2>/dev/null
go run -tags seccomp ./scripts/tracestart -n "$runs" "$work/bin/berthctl" "$work/rootfs"
