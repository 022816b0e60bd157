#!/usr/bin/env bash
# Times `berthctl --backend docker run --rm --image IMG -- /bin/true` against
# `docker run --rm IMG /bin/true` on the same daemon and busybox image,
# interleaved in one run, and prints the median of each and the ratio
# (target <= 1.00). `docker run --network none` is timed too: berth's
# default spec asks for a private network namespace with loopback only,
# which is Docker's "none" network.
# Usage: scripts/bench-docker.sh [ROUNDS] (default 30); DOCKER_HOST picks
# the daemon (default unix:///run/docker.sock).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-30}
host=${DOCKER_HOST:-unix:///run/docker.sock}
image=berthrun-bench/busybox:latest
docker=docker
[ -x /usr/bin/docker ] && docker=/usr/bin/docker # the CLI matching Debian's daemon

work=$(mktemp -d /tmp/berth-bench-docker.XXXXXX)
trap 'rm -rf "$work"; "$docker" -H "$host" rmi "$image" >/dev/null 2>&1 || true' EXIT

go build -tags seccomp -o "$work/berthctl" ./examples/berthctl
go run -tags seccomp ./internal/fixture/mkrootfs "$work/rootfs"
# No registry: the busybox root filesystem becomes an image by import.
tar -C "$work/rootfs" -c . | "$docker" -H "$host" import - "$image" >/dev/null
# berth runs images of its own store: the same image, imported from the
# daemon's docker-save archive (same config, so the same image ID there).
"$docker" -H "$host" save -o "$work/image.tar" "$image"
"$work/berthctl" --root "$work/state" image import --expect-tag "$image" "$work/image.tar" >/dev/null

berth=("$work/berthctl" --backend docker --docker-host "$host" --root "$work/state" run --rm --image "$image" -- /bin/true)
plain=("$docker" -H "$host" run --rm "$image" /bin/true)
none=("$docker" -H "$host" run --rm --network none "$image" /bin/true)

now() { echo "${EPOCHREALTIME/./}"; } # microseconds, no fork
declare -a t_berth t_docker t_none
run_timed() { # name command...
	local t0 t1
	t0=$(now)
	"${@:2}" >/dev/null
	t1=$(now)
	eval "t_$1+=($((t1 - t0)))"
}

# One untimed round warms page caches and the daemon for all three.
"${berth[@]}"
"${plain[@]}"
"${none[@]}"

for _ in $(seq "$rounds"); do
	run_timed berth "${berth[@]}"
	run_timed docker "${plain[@]}"
	run_timed none "${none[@]}"
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mb=$(median "${t_berth[@]}")
md=$(median "${t_docker[@]}")
mn=$(median "${t_none[@]}")
awk -v b="$mb" -v d="$md" -v n="$mn" -v r="$rounds" -v h="$host" 'BEGIN {
	printf "create+start+wait+remove of /bin/true on %s, median of %d runs each\n", h, r
	printf "  berthctl --backend docker run --rm   %7.1f ms\n", b/1000
	printf "  docker run --rm                      %7.1f ms\n", d/1000
	printf "  docker run --rm --network none       %7.1f ms\n", n/1000
	printf "  berthctl/docker = %.2f (target <= 1.00)\n", b/d
	printf "  berthctl/docker --network none = %.2f\n", b/n
}'
