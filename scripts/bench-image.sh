#!/usr/bin/env bash
# Times `berthctl image import` + `berthctl image unpack` against
# `docker load` and `tar -xf` of the same data, interleaved in one run, on a
# large docker-save archive (default 929 MB of file content in 77,000 files
# over 4 layers, the size of issue 14's reference), and prints the medians,
# the ratios and the peak resident memory of berthctl (/usr/bin/time -v).
#
# Usage: scripts/bench-image.sh [ROUNDS]   (default 3)
# Environment: BENCH_DIR (default /var/tmp) holds the work files (~2 GB, and
# 2 GB per round and contender, kept until the end with BENCH_FS=here);
# BENCH_SIZE and BENCH_FILES change the archive, BENCH_GZIP=1 gzips its
# layers (tar -xf then decompresses them too). With BASELINE=REV (a git
# revision), berthctl built from REV is timed in the same rounds too (or
# BENCH_BASE=BINARY, a berthctl built already), for a before/after
# comparison under the same conditions.
# Without a docker daemon on /run/docker.sock (scripts/setup-docker.sh starts
# one) the docker column is skipped, and said so.
#
# Every round starts with the page cache clean of dirty data (sync, not
# timed), so that one contender does not pay for another's writeback; the
# archive itself stays cached for all.
#
# Besides the wall time, each contender's CPU time (user + system) is
# printed: on a shared machine (other jobs on the same 2 cores) wall times
# swing by several times from one run to the next, CPU times much less.
# The docker column counts the CPU of the docker client, dockerd and
# containerd during the load. One effect skews wall and system time alike:
# on ext4 without a journal (this machine's root), creating files right
# after many were deleted (by the previous round, or anyone else) scans
# the recently deleted inodes on every create (recently_deleted in
# fs/ext4/ialloc.c); tar and berth then both take several times longer.
# So by default (BENCH_FS=ext4) tar and berth run on a fresh ext4
# filesystem made for the run (mkfs.ext4 defaults, with a journal, on a
# loop device over a sparse file in BENCH_DIR), as most hosts have, and
# where nobody else deletes; docker keeps its own data root (where its
# rmi of the previous round's image slows its own load likewise).
# BENCH_FS=here runs them in BENCH_DIR itself.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
size=${BENCH_SIZE:-929000000}
files=${BENCH_FILES:-77000}
fsmode=${BENCH_FS:-ext4}
case $fsmode in
ext4 | here) ;;
*)
	echo "bench-image: BENCH_FS is ext4 (the default) or here, not $fsmode" >&2
	exit 2
	;;
esac

if [ ! -x /usr/bin/time ]; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fi

top=$(mktemp -d "${BENCH_DIR:-/var/tmp}/berth-bench-image.XXXXXX")
work=$top
docker_ok=false
loop=""
cleanup() {
	if $docker_ok; then docker rmi -f bench:1 >/dev/null 2>&1 || true; fi
	if [ -n "$loop" ]; then
		umount "$top/fs" || true
		losetup -d "$loop" || true
	fi
	rm -rf "$top"
}
trap cleanup EXIT
fsname="${BENCH_DIR:-/var/tmp}"
if [ "$fsmode" = ext4 ]; then
	truncate -s 24G "$work/fs.img"
	mkfs.ext4 -q -F "$work/fs.img"
	loop=$(losetup --direct-io=on -f --show "$work/fs.img")
	mkdir "$work/fs"
	mount "$loop" "$work/fs"
	fsname="a fresh ext4 ($loop)"
	work="$work/fs"
fi

if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1 && [ -x scripts/setup-docker.sh ]; then
	scripts/setup-docker.sh >/dev/null 2>&1 || true
fi
if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
	docker_ok=true
else
	echo "bench-image: no docker daemon answers (docker version); the docker load column is skipped"
fi

go build -tags seccomp -o "$work/berthctl" ./examples/berthctl
if [ -n "${BASELINE:-}" ]; then
	mkdir "$work/base"
	git archive "$BASELINE" | tar -x -C "$work/base"
	(cd "$work/base" && go build -tags seccomp -o "$work/berthctl-base" ./examples/berthctl)
	rm -rf "$work/base"
	BENCH_BASE="$work/berthctl-base"
fi
go build -tags seccomp -o "$work/mkarchive" ./image/imagetest/mkarchive
echo "bench-image: building a docker-save archive of $size bytes in $files files..."
"$work/mkarchive" -size "$size" -files "$files" -layers 4 ${BENCH_GZIP:+-gzip} -tag bench:1 "$work/image.tar"
archive_bytes=$(stat -c %s "$work/image.tar")

# The same layers as plain tar files, in the image's order, for tar -xf.
mkdir "$work/layers"
tar -xf "$work/image.tar" -C "$work/layers"
mapfile -t layers < <(tr ',[]"' '\n\n\n\n' <"$work/layers/manifest.json" | grep '/layer.tar$')

now() { echo "${EPOCHREALTIME/./}"; } # microseconds
rss() { sed -n 's/.*Maximum resident set size (kbytes): //p' "$1"; }
# cpu FILE: user + system seconds of a /usr/bin/time -v report, in microseconds.
cpu() { awk -F': ' '/User time|System time/ {s += $2} END {printf "%d\n", s * 1e6}' "$1"; }
# dcpu: CPU ticks (1/100 s) used so far by dockerd and containerd and
# their children they waited for (docker-untar).
dcpu() {
	local t=0 p
	for p in $(cat /run/docker.pid 2>/dev/null) $(pgrep -x containerd); do
		t=$((t + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat" 2>/dev/null || echo 0)))
	done
	echo "$t"
}
declare -a t_import t_unpack t_berth t_tar t_docker rss_import rss_unpack c_berth c_tar c_docker t_base c_base

# Warm the archive and the layers into the page cache once.
cat "$work/image.tar" "${layers[@]/#/$work/layers/}" >/dev/null

# Each contender writes into out/ROUND-NAME. On the fresh ext4 that is
# removed after it, so that the page cache does not fill up with what
# earlier contenders wrote (reclaiming it is charged to whoever
# allocates). Elsewhere nothing is deleted before the end of the run: on
# ext4 without a journal, creating files after many were deleted is slow
# for a minute or more (see above), and one contender would pay for
# another's deletions. Docker's own removals happen in its data root.
mkdir "$work/out"
done_with() {
	if [ "$fsmode" = ext4 ]; then rm -rf "$1"; fi
}

# berth BIN NAME: import + unpack with BIN; sets bt (µs), bc (CPU µs).
berth() {
	local out="$work/out/$round-$2" t0 t1 t2
	sync
	t0=$(now)
	/usr/bin/time -v -o "$work/time-import" "$1" --root "$out/state" image import --expect-tag bench:1 "$work/image.tar" >/dev/null
	t1=$(now)
	/usr/bin/time -v -o "$work/time-unpack" "$1" --root "$out/state" image unpack bench:1 "$out/rootfs"
	t2=$(now)
	bi=$((t1 - t0)) bu=$((t2 - t1)) bt=$((t2 - t0))
	bc=$(($(cpu "$work/time-import") + $(cpu "$work/time-unpack")))
	done_with "$out"
}
run_berth() {
	berth "$work/berthctl" berth
	t_import+=("$bi") t_unpack+=("$bu") t_berth+=("$bt") c_berth+=("$bc")
	rss_import+=("$(rss "$work/time-import")")
	rss_unpack+=("$(rss "$work/time-unpack")")
}
run_base() {
	berth "$BENCH_BASE" base
	t_base+=("$bt") c_base+=("$bc")
}
run_tar() {
	local out="$work/out/$round-tar" t0 t1
	mkdir "$out"
	sync
	t0=$(now)
	/usr/bin/time -v -o "$work/time-tar" bash -c 'for l in "${@:3}"; do tar -xf "$1/$l" -C "$2"; done' _ "$work/layers" "$out" "${layers[@]}"
	t1=$(now)
	t_tar+=($((t1 - t0)))
	c_tar+=("$(cpu "$work/time-tar")")
	done_with "$out"
}
run_docker() {
	docker rmi -f bench:1 >/dev/null 2>&1 || true
	sync
	local t0 t1 d0 d1
	d0=$(dcpu)
	t0=$(now)
	/usr/bin/time -v -o "$work/time-docker" docker load -q -i "$work/image.tar" >/dev/null
	t1=$(now)
	d1=$(dcpu)
	t_docker+=($((t1 - t0)))
	c_docker+=($(($(cpu "$work/time-docker") + (d1 - d0) * 10000)))
	docker rmi -f bench:1 >/dev/null
}

# The contenders take turns going first.
contenders=(berth tar)
if $docker_ok; then contenders+=(docker); fi
if [ -n "${BENCH_BASE:-}" ]; then contenders+=(base); fi
for round in $(seq "$rounds"); do
	n=${#contenders[@]}
	for j in $(seq 0 $((n - 1))); do
		"run_${contenders[$(((round + j) % n))]}"
	done
	echo "bench-image: round $round of $rounds done"
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mi=$(median "${t_import[@]}")
mu=$(median "${t_unpack[@]}")
mb=$(median "${t_berth[@]}")
mt=$(median "${t_tar[@]}")
md=0
cd_=0
if $docker_ok; then
	md=$(median "${t_docker[@]}")
	cd_=$(median "${c_docker[@]}")
fi
cb=$(median "${c_berth[@]}")
ct=$(median "${c_tar[@]}")
mba=0
cba=0
if [ -n "${BENCH_BASE:-}" ]; then
	mba=$(median "${t_base[@]}")
	cba=$(median "${c_base[@]}")
fi
ri=$(printf '%s\n' "${rss_import[@]}" | sort -n | tail -1)
ru=$(printf '%s\n' "${rss_unpack[@]}" | sort -n | tail -1)
awk -v i="$mi" -v u="$mu" -v b="$mb" -v t="$mt" -v d="$md" -v n="$rounds" -v bytes="$archive_bytes" \
	-v files="$files" -v ri="$ri" -v ru="$ru" -v cb="$cb" -v ct="$ct" -v cd="$cd_" -v ba="$mba" -v cba="$cba" -v fs="$fsname" -v gz="${BENCH_GZIP:+gzipped }" 'BEGIN {
	printf "docker-save archive: %.2f GB, %d files in 4 %slayers; median of %d rounds; on %s\n", bytes/1e9, files, gz, n, fs
	printf "  berthctl image import          %7.2f s\n", i/1e6
	printf "  berthctl image unpack          %7.2f s\n", u/1e6
	printf "  berthctl import + unpack       %7.2f s   CPU %6.2f s\n", b/1e6, cb/1e6
	printf "  tar -xf (the 4 layer tars)     %7.2f s   CPU %6.2f s\n", t/1e6, ct/1e6
	if (d > 0) printf "  docker load                    %7.2f s   CPU %6.2f s (client, dockerd, containerd)\n", d/1e6, cd/1e6
	else       printf "  docker load                    skipped (no docker daemon)\n"
	printf "  berthctl / tar    = %.2f (target <= 1.50)   CPU %.2f\n", b/t, cb/ct
	if (d > 0) printf "  berthctl / docker = %.2f (target <= 0.20)   CPU %.2f\n", b/d, cb/cd
	if (ba > 0) printf "  baseline import + unpack       %7.2f s   CPU %6.2f s; this tree / baseline = %.2f, CPU %.2f\n", ba/1e6, cba/1e6, b/ba, cb/cba
	printf "  peak RSS: import %.0f MiB, unpack %.0f MiB (target < 256 MiB)\n", ri/1024, ru/1024
}'
