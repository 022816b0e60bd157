#!/usr/bin/env bash
# Times `berthctl run --rm` against `runc run` and `lxc-execute` on the same
# busybox root filesystem, interleaved in one run, and prints the median of
# each and the ratios, then the median of each phase of berthctl's run.
# Usage: scripts/bench-run.sh [ROUNDS] (default 30).
# With BASELINE=REV (a git revision), berthctl built from REV runs in the
# same rounds too, and the ratio of this tree's median to REV's is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-30}

work=$(mktemp -d /tmp/berth-bench.XXXXXX)
chmod 711 "$work"
trap 'rm -rf "$work"' EXIT

# The binary lives apart from the state, as in /usr/local/bin and
# /var/lib/berth: libcontainer then seals it with an overlay instead of
# copying it for every container.
mkdir -p "$work/bin"
go build -tags seccomp -o "$work/bin/berthctl" ./examples/berthctl
go build -tags seccomp -o "$work/bin/benchinproc" ./scripts/benchinproc
go run -tags seccomp ./internal/fixture/mkrootfs "$work/rootfs"
if [ -n "${BASELINE:-}" ]; then
	mkdir -p "$work/base"
	git archive "$BASELINE" | tar -x -C "$work/base"
	(cd "$work/base" && go build -tags seccomp -o "$work/bin/berthctl-base" ./examples/berthctl)
fi

# runc: a bundle whose config runs /bin/true without a terminal, under the
# seccomp profile berth gives its containers (as Docker and containerd give
# runc theirs): both sides do the same work.
mkdir -p "$work/bundle"
(cd "$work/bundle" && runc spec)
sed -i -e 's/"terminal": true/"terminal": false/' -e 's/"sh"/"\/bin\/true"/' \
	-e "s#\"path\": \"rootfs\"#\"path\": \"$work/rootfs\"#" "$work/bundle/config.json"
cp -r "$work/bundle" "$work/bundle-plain" # and one without, to show what confinement costs
go run -tags seccomp ./internal/fixture/seccompprofile "$work/bundle/config.json"

# lxc-execute: a container without network on the same rootfs.
mkdir -p "$work/lxc"
cat >"$work/lxc.conf" <<CONF
lxc.rootfs.path = dir:$work/rootfs
lxc.uts.name = bench
lxc.net.0.type = empty
lxc.mount.auto = proc:mixed sys:ro
lxc.apparmor.profile = unconfined
CONF

now() { echo "${EPOCHREALTIME/./}"; } # microseconds, no fork
declare -a t_berth t_runc t_lxc t_base t_plain
run_timed() { # name command...
	local t0 t1
	t0=$(now)
	"${@:2}" >/dev/null
	t1=$(now)
	eval "t_$1+=($((t1 - t0)))"
}

# One untimed round warms page caches for all three.
"$work/bin/berthctl" --root "$work/state" run --rm --rootfs "$work/rootfs" -- /bin/true
[ -z "${BASELINE:-}" ] || "$work/bin/berthctl-base" --root "$work/state-base" run --rm --rootfs "$work/rootfs" -- /bin/true
runc --root "$work/runc" run --bundle "$work/bundle" warm >/dev/null
lxc-execute -P "$work/lxc" -n warm -f "$work/lxc.conf" -- /bin/true

for i in $(seq "$rounds"); do
	run_timed berth "$work/bin/berthctl" --root "$work/state" run --rm --rootfs "$work/rootfs" -- /bin/true
	run_timed runc runc --root "$work/runc" run --bundle "$work/bundle" "b$i"
	run_timed plain runc --root "$work/runc" run --bundle "$work/bundle-plain" "p$i"
	run_timed lxc lxc-execute -P "$work/lxc" -n "b$i" -f "$work/lxc.conf" -- /bin/true
	[ -z "${BASELINE:-}" ] || run_timed base "$work/bin/berthctl-base" --root "$work/state-base" run --rm --rootfs "$work/rootfs" -- /bin/true
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mb=$(median "${t_berth[@]}")
mr=$(median "${t_runc[@]}")
ml=$(median "${t_lxc[@]}")
mp=$(median "${t_plain[@]}")
awk -v b="$mb" -v r="$mr" -v l="$ml" -v p="$mp" -v n="$rounds" 'BEGIN {
	printf "create+start+wait+delete of /bin/true, median of %d runs each\n", n
	printf "  berthctl run --rm   %7.1f ms\n", b/1000
	printf "  runc run            %7.1f ms (berth'"'"'s seccomp profile)\n", r/1000
	printf "  runc run, no seccomp %6.1f ms\n", p/1000
	printf "  lxc-execute         %7.1f ms\n", l/1000
	printf "  berthctl/runc  = %.2f (target <= 0.80)\n", b/r
	printf "  berthctl/lxc   = %.2f (target <= 1.00)\n", b/l
}'
if [ -n "${BASELINE:-}" ]; then
	mo=$(median "${t_base[@]}")
	awk -v b="$mb" -v o="$mo" -v r="$mr" -v p="$mp" -v rev="$BASELINE" 'BEGIN {
		printf "  berthctl at %s  %7.1f ms\n", rev, o/1000
		printf "  berthctl/berthctl@%s = %.2f\n", rev, b/o
		printf "  berthctl@%s/runc without seccomp = %.2f (the ratio before confinement)\n", rev, o/p
	}'
fi

# Where berthctl's time goes: the same run again ROUNDS times with
# BERTH_PHASES=1 (apart from the timed rounds, so that printing the phases
# costs them nothing), and the median of each phase, in the order they come.
for i in $(seq "$rounds"); do
	BERTH_PHASES=1 "$work/bin/berthctl" --root "$work/state" run --rm --rootfs "$work/rootfs" -- /bin/true 2>>"$work/phases" >/dev/null
done
echo "berthctl run --rm by phase (BERTH_PHASES=1), median of $rounds runs; lc.Start is libcontainer's start of the init (scripts/trace-start.sh splits it)"
awk '$1 == "phase" {
	if (!($2 in n)) order[++k] = $2
	v[$2, ++n[$2]] = $3
}
END {
	for (i = 1; i <= k; i++) {
		p = order[i]; m = n[p]
		# insertion sort of the phase'"'"'s values
		for (a = 2; a <= m; a++) { x = v[p, a]; for (b = a - 1; b >= 1 && v[p, b] > x; b--) v[p, b + 1] = v[p, b]; v[p, b + 1] = x }
		med = (m % 2) ? v[p, (m + 1) / 2] : (v[p, m / 2] + v[p, m / 2 + 1]) / 2
		printf "  %-28s %7.2f ms\n", p, med
	}
}' "$work/phases"

# The library path orchestrators use, in process, against runc run of the
# same bundle, interleaved in a run of its own. benchinproc is a small
# program (the backend and little else); the containers' inits are re-execs
# of it, attached or supervised. Two rows more: supervisors running
# examples/berth-supervisor (what berthctl and berth-cri use when it lies
# beside them), and supervisors running berthctl, as a large caller's
# re-exec would (berth-cri, an orchestrator linking all of berth). Two rows
# more come from scripts/bootfloor, which links libcontainer and nothing of
# berth: libcontainer alone on the bundle (runc run less its command line,
# the floor under every row), and its boot (with the first, the floor of a
# command line).
go build -tags seccomp -o "$work/bin/berth-supervisor" ./examples/berth-supervisor
go build -tags seccomp -o "$work/bin/bootfloor" ./scripts/bootfloor
"$work/bin/benchinproc" -rounds "$rounds" -floor "$work/bin/bootfloor" \
	-supervisor "berth-supervisor=$work/bin/berth-supervisor" \
	-supervisor "a re-exec of berthctl (a large caller)=$work/bin/berthctl" \
	"$work/rootfs" "$work/bundle" "$work/runc"
