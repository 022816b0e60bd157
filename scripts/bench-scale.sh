#!/usr/bin/env bash
# Runs N sleeping containers at once on the embedded engine (default
# 10,000, 8 created at a time, stopping early if MemAvailable falls under
# 3 GiB), printing at 10, 1000, 2500, 5000, 7500 and N the time per create and what each
# container costs the host (memory, the kernel's share, the supervisors'
# memory, tasks against kernel.pid_max, descriptors); then lists them,
# removes them, and checks that nothing is left (scripts/benchscale).
# Usage: scripts/bench-scale.sh [N] [PARALLEL]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
par=${2:-8}
work=$(mktemp -d /tmp/berth-bench-scale.XXXXXX)
trap 'rm -rf "$work"' EXIT
go build -tags seccomp -o "$work/benchscale" ./scripts/benchscale
go run -tags seccomp ./internal/fixture/mkrootfs "$work/rootfs"
marks="10,1000,2500,5000,7500,$n"
"$work/benchscale" -n "$n" -parallel "$par" -marks "$marks" "$work/rootfs"
