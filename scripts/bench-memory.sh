#!/usr/bin/env bash
# Host memory per running container: the Pss of the processes started for
# a container other than its own, with N sleeping containers of berth (its
# supervisors: `berthctl create` + `start`, once with berthctl's own re-exec
# as the supervisor, once with examples/berth-supervisor) and of LXC (each
# lxc-execute monitor and the init it forks) running at once on the same
# busybox root filesystem, and the ratios.
# Usage: scripts/bench-memory.sh [N] (default 100).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100}

work=$(mktemp -d /tmp/berth-bench-mem.XXXXXX)
chmod 711 "$work"
lxc_pids=()
# LXC's containers are named after the work directory: a monitor killed
# with SIGKILL leaves its cgroups (lxc.monitor.NAME, lxc.payload.NAME in
# every hierarchy), which the cleanup then removes by name.
name=mem-${work##*.}
cleanup() {
	# Stopped one by one, each monitor removes its container's cgroups.
	for i in $(seq "$n"); do lxc-stop -P "$work/lxc" -n "$name-$i" -k >/dev/null 2>&1 || true; done
	for _ in $(seq 50); do
		pgrep -f "lxc-execute -P $work/lxc" >/dev/null || break
		sleep 0.1
	done
	pkill -9 -f "lxc-execute -P $work/lxc" 2>/dev/null || true
	for d in /sys/fs/cgroup/*/lxc.payload."$name"-* /sys/fs/cgroup/*/lxc.monitor."$name"-*; do
		[ ! -d "$d" ] || find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
	for st in "$work"/state-*; do
		[ ! -x "$work/bin/berthctl" ] || [ ! -d "$st" ] || "$work/bin/berthctl" --root "$st" rm -f $("$work/bin/berthctl" --root "$st" ps -q 2>/dev/null) >/dev/null 2>&1 || true
	done
	rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/bin" "$work/lxc"
go build -tags seccomp -o "$work/bin/berthctl" ./examples/berthctl
go build -tags seccomp -o "$work/bin/berth-supervisor" ./examples/berth-supervisor
go run -tags seccomp ./internal/fixture/mkrootfs "$work/rootfs"
cat >"$work/lxc.conf" <<CONF
lxc.rootfs.path = dir:$work/rootfs
lxc.uts.name = bench
lxc.net.0.type = empty
lxc.mount.auto = proc:mixed sys:ro
lxc.apparmor.profile = unconfined
CONF

pss() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
sum_pss() { local t=0 p; for p in "$@"; do t=$((t + $(pss "$p"))); done; echo "$t"; }

# berth NAME SUPERVISOR: n containers on state root NAME, kept by
# SUPERVISOR (berthctl --supervisor); sets ns, kb and anon, the
# supervisors' count, Pss and anonymous Pss.
berth() {
	local st="$work/state-$1" i id p
	for i in $(seq "$n"); do
		id=$("$work/bin/berthctl" --root "$st" --supervisor "$2" create --rootfs "$work/rootfs" -- /bin/sleep 100000)
		"$work/bin/berthctl" --root "$st" start "$id"
	done
	sleep 1
	mapfile -t sup < <(pgrep -f "berth-supervisor $st " || true)
	ns=${#sup[@]} kb=$(sum_pss "${sup[@]}") anon=0
	for p in "${sup[@]}"; do anon=$((anon + $(awk '/^Pss_Anon:/ {print $2}' "/proc/$p/smaps_rollup"))); done
}
# The supervisor as berthctl's own re-exec, and as examples/berth-supervisor
# (which berthctl uses when it lies beside it).
berth self self
ns_self=$ns berth_kb=$kb berth_anon=$anon
berth small "$work/bin/berth-supervisor"
ns_small=$ns small_kb=$kb small_anon=$anon

for i in $(seq "$n"); do
	lxc-execute -P "$work/lxc" -n "$name-$i" -f "$work/lxc.conf" -- /bin/sleep 100000 >/dev/null 2>&1 &
	lxc_pids+=($!)
done
sleep 2
# Each lxc-execute forks the container's init (lxc's own, which then runs
# the command): both are counted, the command (sleep) is not.
lxcs=()
for p in "${lxc_pids[@]}"; do
	lxcs+=("$p")
	for c in $(cat "/proc/$p/task/$p/children" 2>/dev/null); do lxcs+=("$c"); done
done
lxc_kb=$(sum_pss "${lxcs[@]}")

awk -v b="$berth_kb" -v ba="$berth_anon" -v s="$small_kb" -v sa="$small_anon" -v l="$lxc_kb" -v n="$n" -v ns="$ns_self" -v nss="$ns_small" -v nl="${#lxc_pids[@]}" -v ni="$((${#lxcs[@]} - ${#lxc_pids[@]}))" 'BEGIN {
	printf "host memory per running container, %d sleeping containers each (Pss of the processes started for them, other than their own)\n", n
	printf "  berth, supervisor = berthctl (%d process(es))        %6.3f MB (%.3f MB of it anonymous, the rest the binary'"'"'s pages)\n", ns, b/1024/n, ba/1024/n
	printf "  berth, supervisor = berth-supervisor (%d process(es)) %6.3f MB (%.3f MB of it anonymous)\n", nss, s/1024/n, sa/1024/n
	printf "  LXC (%d lxc-execute monitors + %d inits)             %6.3f MB\n", nl, ni, l/1024/n
	printf "  berth/LXC = %.2f with berthctl, %.2f with berth-supervisor (target <= 0.25 MB: %.3f, %.3f)\n", b/l, s/l, b/1024/n, s/1024/n
}'
