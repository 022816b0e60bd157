#!/usr/bin/env bash
# Times berth's pull of a 1 GB image from the local registry (package
# registry, through scripts/benchpull, into a fresh image store) against
# `skopeo copy` of the same image to a fresh OCI layout and `docker pull`
# of it from the same registry, interleaved in one run, and prints the
# medians, the ratios and the peak resident memory of the pullers
# (/usr/bin/time -v).
#
# The image (default 1 GB of file content in 64,000 files over 4 gzip
# layers, mkarchive's pseudo-random content, which gzip does not shrink)
# is pushed once, with package registry, to a repository of its own;
# every round pulls all of it: docker's copy is removed (docker rmi) before
# each of its pulls, and a pull that finds a layer already there is
# reported. At the end the image, the stores, the OCI layouts and the
# repository's manifest and blob links go; the registry keeps the blobs'
# bytes until its garbage collection (the same bytes every run, for the
# same BENCH_SIZE and BENCH_FILES).
#
# Usage: scripts/bench-registry.sh [ROUNDS]   (default 3)
# Environment: BERTH_REGISTRY (default 127.0.0.1:5111, which
# scripts/setup-registry.sh starts); BENCH_DIR (default /var/tmp) holds the
# ~3 GB of work files; BENCH_SIZE and BENCH_FILES change the image;
# BENCH_CPUPROFILE=FILE writes a CPU profile of one more berth pull
# (untimed) for `go tool pprof`.
# Without a docker daemon on /run/docker.sock (scripts/setup-docker.sh starts
# one) the docker column is skipped, and said so; likewise without skopeo.
#
# Every contender starts with the page cache clean of dirty data (sync, not
# timed), so that one does not pay for another's writeback; the registry's
# blobs stay cached for all. Besides wall time, the CPU time (user+system)
# each spent is printed: berth's and skopeo's processes', and the docker
# daemon's (with its children's) while it pulled, which counts whatever
# else the daemon did meanwhile. The machine's load average, printed too,
# says whether something else competed for the CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
size=${BENCH_SIZE:-1000000000}
files=${BENCH_FILES:-64000}
registry=${BERTH_REGISTRY:-127.0.0.1:5111}
host=${DOCKER_HOST:-unix:///run/docker.sock}
docker=docker
[ -x /usr/bin/docker ] && docker=/usr/bin/docker # the CLI matching Debian's daemon
docker() { command "$docker" -H "$host" "$@"; }

if [ ! -x /usr/bin/time ]; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fi

answers() { curl -fsS -m 3 -o /dev/null "http://$registry/v2/" 2>/dev/null; }
if ! answers && [ -x scripts/setup-registry.sh ] && [ "$registry" = 127.0.0.1:5111 ]; then
	scripts/setup-registry.sh >/dev/null || true
fi
if ! answers; then
	echo "bench-registry: no registry answers at http://$registry/v2/ (scripts/setup-registry.sh starts one)" >&2
	exit 1
fi

docker_ok=false
if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1 && [ -x scripts/setup-docker.sh ]; then
	scripts/setup-docker.sh >/dev/null 2>&1 || true
fi
if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
	docker_ok=true
else
	echo "bench-registry: no docker daemon answers on $host; the docker pull column is skipped"
fi
skopeo_ok=false
if command -v skopeo >/dev/null; then
	skopeo_ok=true
else
	echo "bench-registry: no skopeo (scripts/setup-registry.sh installs it); the skopeo column is skipped"
fi

repo=berth-bench/registry-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
ref=$registry/$repo:1
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/berth-bench-registry.XXXXXX")
pushed=""
cleanup() {
	if $docker_ok; then docker rmi -f "$ref" >/dev/null 2>&1 || true; fi
	rm -rf "$work"
	if [ -n "$pushed" ]; then
		# The manifest, then the repository's links to the blobs it named.
		local blobs
		blobs=$(curl -fsS -m 10 -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
			"http://$registry/v2/$repo/manifests/$pushed" | grep -Eo 'sha256:[0-9a-f]{64}' | sort -u || true)
		if curl -fsS -m 10 -o /dev/null -X DELETE "http://$registry/v2/$repo/manifests/$pushed"; then
			for b in $blobs; do
				curl -fsS -m 10 -o /dev/null -X DELETE "http://$registry/v2/$repo/blobs/$b" || true
			done
			echo "bench-registry: deleted $repo from the registry; its blobs' bytes stay until the registry's garbage collection"
		else
			echo "bench-registry: could not delete $ref@$pushed from the registry" >&2
		fi
	fi
}
trap cleanup EXIT

go build -tags seccomp -o "$work/benchpull" ./scripts/benchpull
go build -tags seccomp -o "$work/mkarchive" ./image/imagetest/mkarchive
echo "bench-registry: building an image of $size bytes in $files files over 4 gzip layers..."
"$work/mkarchive" -format oci -gzip -size "$size" -files "$files" -layers 4 "$work/image.tar"
echo "bench-registry: pushing it to $ref..."
pushed=$("$work/benchpull" push "$work/image.tar" "$ref")
rm -f "$work/image.tar"

now() { echo "${EPOCHREALTIME/./}"; } # microseconds
rss() { sed -n 's/.*Maximum resident set size (kbytes): //p' "$1"; }
cpu() { awk -F': ' '/User time|System time/ {s += $2} END {printf "%d", s * 1e6}' "$1"; } # microseconds
ticks=$(getconf CLK_TCK)
daemon_cpu() { # microseconds of CPU the docker daemon and its reaped children used
	local pid
	pid=$(cat /run/docker.pid 2>/dev/null) || { echo 0; return; }
	awk -v t="$ticks" '{sub(/^.*\) /, ""); printf "%d", ($12 + $13 + $14 + $15) * 1e6 / t}' "/proc/$pid/stat" 2>/dev/null || echo 0
}
declare -a t_berth t_skopeo t_docker rss_berth rss_skopeo c_berth c_skopeo c_docker
bytes=0
load0=$(cut -d' ' -f1 /proc/loadavg)

for i in $(seq "$rounds"); do
	rm -rf "$work/store"
	sync
	t0=$(now)
	bytes=$(/usr/bin/time -v -o "$work/time-berth" "$work/benchpull" pull "$work/store" "$ref")
	t1=$(now)
	t_berth+=($((t1 - t0)))
	rss_berth+=("$(rss "$work/time-berth")")
	c_berth+=("$(cpu "$work/time-berth")")
	rm -rf "$work/store"

	if $skopeo_ok; then
		rm -rf "$work/oci"
		sync
		t0=$(now)
		/usr/bin/time -v -o "$work/time-skopeo" skopeo copy -q --src-tls-verify=false "docker://$ref" "oci:$work/oci:1"
		t1=$(now)
		t_skopeo+=($((t1 - t0)))
		rss_skopeo+=("$(rss "$work/time-skopeo")")
		c_skopeo+=("$(cpu "$work/time-skopeo")")
		rm -rf "$work/oci"
	fi

	if $docker_ok; then
		docker rmi -f "$ref" >/dev/null 2>&1 || true
		sync
		d0=$(daemon_cpu)
		t0=$(now)
		docker pull "$ref" >"$work/docker-pull.log"
		t1=$(now)
		d1=$(daemon_cpu)
		t_docker+=($((t1 - t0)))
		c_docker+=($((d1 - d0)))
		if grep -q "Already exists" "$work/docker-pull.log"; then
			echo "bench-registry: docker pull found layers already there:" >&2
			grep "Already exists" "$work/docker-pull.log" >&2
		fi
		docker rmi -f "$ref" >/dev/null
	fi
	echo "bench-registry: round $i of $rounds done"
done

load1=$(cut -d' ' -f1 /proc/loadavg)

if [ -n "${BENCH_CPUPROFILE:-}" ]; then
	rm -rf "$work/store"
	"$work/benchpull" pull -cpuprofile "$BENCH_CPUPROFILE" "$work/store" "$ref" >/dev/null
	rm -rf "$work/store"
	echo "bench-registry: CPU profile of one more berth pull in $BENCH_CPUPROFILE (go tool pprof -top $BENCH_CPUPROFILE)"
fi

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
peak() { printf '%s\n' "$@" | sort -n | tail -1; }
mb=$(median "${t_berth[@]}")
cb=$(median "${c_berth[@]}")
ms=0
md=0
rs=0
cs=0
cdock=0
if $skopeo_ok; then
	ms=$(median "${t_skopeo[@]}")
	cs=$(median "${c_skopeo[@]}")
	rs=$(peak "${rss_skopeo[@]}")
fi
if $docker_ok; then
	md=$(median "${t_docker[@]}")
	cdock=$(median "${c_docker[@]}")
fi
rb=$(peak "${rss_berth[@]}")
awk -v b="$mb" -v s="$ms" -v d="$md" -v cb="$cb" -v cs="$cs" -v cd="$cdock" -v n="$rounds" -v bytes="$bytes" \
	-v files="$files" -v rb="$rb" -v rs="$rs" -v reg="$registry" -v l0="$load0" -v l1="$load1" -v cpus="$(nproc)" 'BEGIN {
	printf "pull of a %.2f GB image (%d files in 4 gzip layers) from %s; median of %d rounds\n", bytes/1e9, files, reg, n
	printf "                                    wall              CPU\n"
	printf "  berth (package registry)       %7.2f s %5.0f MB/s %6.2f s\n", b/1e6, bytes/b, cb/1e6
	if (s > 0) printf "  skopeo copy to an OCI layout   %7.2f s %5.0f MB/s %6.2f s\n", s/1e6, bytes/s, cs/1e6
	else       printf "  skopeo copy                    skipped (no skopeo)\n"
	if (d > 0) printf "  docker pull                    %7.2f s %5.0f MB/s %6.2f s (dockerd)\n", d/1e6, bytes/d, cd/1e6
	else       printf "  docker pull                    skipped (no docker daemon)\n"
	if (d > 0) printf "  berth / docker = %.2f (target <= 1.00)\n", b/d
	if (s > 0) printf "  berth / skopeo = %.2f\n", b/s
	printf "  peak RSS: berth %.0f MiB (target < 256 MiB)", rb/1024
	if (s > 0) printf ", skopeo %.0f MiB", rs/1024
	printf "\n"
	printf "  load average %s at the start, %s at the end (%d CPUs)\n", l0, l1, cpus
}'
