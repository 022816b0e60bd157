#!/usr/bin/env bash
# critest's benchmarks (cri-tools v1.37.0, `critest -benchmark`) against
# berth-cri and against containerd's CRI (Debian's 1.6, set up by
# scripts/containerd-cri.sh), one after the other in one run so that they
# never compete for the CPUs, with the same parameters, the same images
# (from the local registry; busybox and pause pulled, untimed, before each
# run) and the same ginkgo seed; then a table of the median of each
# operation, both servers and the ratio berth/containerd.
#
# Usage: scripts/bench-cri.sh [SAMPLES] [ROUNDS]
#   SAMPLES  lifecycles per benchmark and per run (default 20)
#   ROUNDS   runs of each server, alternated, every other round in reverse
#            order (default 1); the samples of all rounds are pooled
# BERTH_CRI_BASELINE=REV adds berth-cri built from git revision REV as a
# third server (its column and the ratio of this tree to it).
# BENCH_CRI_PROFILE=DIR writes berth-cri's CPU profile and execution trace
# of each round there (berth-cri --cpu-profile, --trace).
# BENCH_CRI_KEEP=DIR keeps critest's outputs and berth-cri's log there.
#
# The benchmarks and what each sample times (critest's JSON output,
# -benchmarking-output-dir):
#   pod        RunPodSandbox, PodSandboxStatus, StopPodSandbox, RemovePodSandbox
#   container  CreateContainer (an ImageStatus then CreateContainer),
#              StartContainer, ContainerStatus, StopContainer, RemoveContainer
#              of `top` in busybox, each in a pod of its own (made and
#              removed untimed). containerd does runc's create in
#              StartContainer and tears the task down as it stops; berth
#              creates in CreateContainer and tears down in RemoveContainer:
#              the table also gives Create+Start and Stop+Remove
#   image      PullImage, ImageStatus, RemoveImage of a small image (busybox
#              and a small layer: a new layer over one the server holds)
#   listing    ListImages
#   sum-of-ops each benchmark's operations summed per sample
#   scratch    RunPodSandbox + CreateContainer + StartContainer +
#              StopPodSandbox + RemovePodSandbox, one sample a run (ginkgo's
#              report; critest times it once, after one untimed warm-up)
# None needs exec or streaming.
#
# Nothing leaves the host: both servers reach only the local registry
# (their mirrors; a dead proxy for anything else). Each server's pods get a
# bridge of their own without a route out. At the end every pod is
# removed, both servers are stopped, and their roots, network namespaces,
# bridges and firewall rules are removed, whatever happened.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD/scripts
samples=${1:-20}
rounds=${2:-1}

if [ "$(id -u)" != 0 ]; then
	echo "bench-cri: must run as root" >&2
	exit 1
fi
command -v containerd >/dev/null || "$here/setup-docker.sh"
"$here/setup-critest.sh" >/dev/null
"$here/setup-cni.sh" >/dev/null
# shellcheck source=containerd-cri.sh
. "$here/containerd-cri.sh"
critest=$ctd_state/bin/critest
crictl_bin=$ctd_state/bin/crictl
read -r -a mirrors <<<"$(tr '\n' ' ' <"$ctd_state/mirrors")"

work=$(mktemp -d /var/tmp/berth-bench-cri.XXXXXX)
chmod 711 "$work"
touch "$work/crictl.yaml" # crictl's settings are all flags here
berth_bridge=berthbench0
berth_subnet=10.251.0.0/24
berth_pid=

# berth_stop [NAME]: removes every pod of berth-cri NAME (the running one),
# stops it, and removes what it left under its root.
berth_stop() {
	local name=${1:-} sock
	[ -n "$berth_pid" ] || return 0
	sock=$work/$name/cri.sock
	if [ -S "$sock" ]; then
		"$crictl_bin" --config "$work/crictl.yaml" --runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock" --timeout 60s rmp -a -f >/dev/null 2>&1 ||
			echo "bench-cri: crictl rmp -a -f on berth-cri failed" >&2
	fi
	if kill -0 "$berth_pid" 2>/dev/null; then
		kill -TERM "$berth_pid"
		for _ in $(seq 100); do kill -0 "$berth_pid" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$berth_pid" 2>/dev/null; then kill -KILL "$berth_pid"; fi
	fi
	wait "$berth_pid" 2>/dev/null || true
	berth_pid=
}

# berth_start NAME: runs berth-cri NAME (berth, or base: the baseline) on
# its root, its network config written, and waits for its answer.
berth_start() {
	local name=$1 dir=$work/$1 bin=$work/bin/berth-cri extra=()
	[ "$name" = berth ] || bin=$work/bin/berth-cri-base
	if [ -n "${BENCH_CRI_PROFILE:-}" ] && [ -n "${2:-}" ]; then
		mkdir -p "$BENCH_CRI_PROFILE"
		extra=(--cpu-profile "$BENCH_CRI_PROFILE/$name-$2.cpu" --trace "$BENCH_CRI_PROFILE/$name-$2.trace")
	fi
	berth_current=$name
	HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY=127.0.0.1,localhost \
		"$bin" --root "$dir" --listen "unix://$dir/cri.sock" --cni-conf-dir "$dir/net.d" "${mirrors[@]}" "${extra[@]}" \
		>>"$work/$name.log" 2>&1 </dev/null &
	berth_pid=$!
	for _ in $(seq 300); do
		"$crictl_bin" --config "$work/crictl.yaml" --runtime-endpoint "unix://$dir/cri.sock" --timeout 2s version >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "bench-cri: berth-cri ($name) does not answer; its log:" >&2
	tail -n 30 "$work/$name.log" >&2
	return 1
}

cleanup() {
	berth_stop "${berth_current:-}"
	# Pods a berth-cri that died left: a berth-cri on the same root
	# serves them again, and removes them.
	local name
	for name in berth base; do
		if ls "$work/$name/cri/sandboxes/"*.json >/dev/null 2>&1; then
			echo "bench-cri: removing the pods berth-cri ($name) left" >&2
			berth_start "$name" || true
			berth_stop "$name"
		fi
	done
	ctd_stop
	# Monitors of containers a failed run left (re-executions of our
	# binaries, which no other process runs).
	local pid exe
	for pid in $(ls /proc | grep -E '^[0-9]+$'); do
		exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || continue
		[[ $exe == "$work/bin/"* ]] && kill -KILL "$pid" 2>/dev/null || true
	done
	{ findmnt -rn -o TARGET | grep -E "^$work(/|$)" || true; } | sort -r | while read -r m; do
		umount -l "$m" || true
	done
	if ip link show "$berth_bridge" >/dev/null 2>&1; then ip link delete "$berth_bridge"; fi
	while iptables -D FORWARD -i "$berth_bridge" ! -o "$berth_bridge" -j DROP 2>/dev/null; do :; done
	rm -rf "$work"
}
trap cleanup EXIT

# berth-cri, built without the race detector, apart from its state (as in
# /usr/local/bin and /var/lib/berth-cri).
mkdir -p "$work/bin"
go build -tags seccomp -o "$work/bin/berth-cri" ./examples/berth-cri
servers=(berth containerd)
if [ -n "${BERTH_CRI_BASELINE:-}" ]; then
	mkdir -p "$work/base-src"
	git archive "$BERTH_CRI_BASELINE" | tar -x -C "$work/base-src"
	(cd "$work/base-src" && go build -tags seccomp -o "$work/bin/berth-cri-base" ./examples/berth-cri)
	servers+=(base)
fi

# Every server: the same parameters. The pulled image is not the
# containers' (busybox), so that removing it never makes a container
# benchmark pull; the listing benchmark's images are removed after it (by
# critest), hence small ones no other benchmark uses.
img=gcr.io/k8s-staging-cri-tools
cat >"$work/params.yaml" <<PARAMS
containersNumber: $samples
containersNumberParallel: 1
podsNumber: $samples
podsNumberParallel: 1
imagesNumber: $samples
imagesNumberParallel: 1
imagePullingBenchmarkImage: $img/test-image-1:latest
imageListingBenchmarkImages: [$img/test-image-2:latest, $img/test-image-3:latest]
containerBenchmarkTimeoutSeconds: 120
podBenchmarkTimeoutSeconds: 120
imageBenchmarkTimeoutSeconds: 120
podContainerStartBenchmarkTimeoutSeconds: 30
PARAMS
prepull=(registry.k8s.io/e2e-test-images/busybox:1.29-2 registry.k8s.io/pause:3.9)
seed=${BENCH_CRI_SEED:-1}

# critest_run NAME SOCKET OUT: the benchmarks against the server on SOCKET,
# their JSON in OUT.
critest_run() {
	local name=$1 sock=$2 out=$3
	mkdir -p "$out"
	(cd "$out" && "$critest" -benchmark -runtime-endpoint "unix://$sock" -image-endpoint "unix://$sock" \
		-benchmarking-params-file "$work/params.yaml" -benchmarking-output-dir "$out" \
		-ginkgo.seed "$seed" -ginkgo.no-color -ginkgo.json-report "$out/report.json") >"$out/critest.log" 2>&1 || {
		echo "bench-cri: critest -benchmark against $name failed; the end of its log:" >&2
		tail -n 40 "$out/critest.log" >&2
		return 1
	}
}

prepull() {
	local sock=$1 i
	for i in "${prepull[@]}"; do
		"$crictl_bin" --config "$work/crictl.yaml" --runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock" --timeout 120s pull "$i" >/dev/null
	done
}

# run_berth NAME ROUND
run_berth() {
	local name=$1 round=$2 dir=$work/$1
	mkdir -p "$dir/net.d" # the same root every round: what was pulled stays
	cat >"$dir/net.d/10-bench.conflist" <<CONF
{
  "cniVersion": "1.0.0",
  "name": "berth-bench",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$berth_bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$berth_subnet"}]],
        "dataDir": "$dir/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CONF
	iptables -C FORWARD -i "$berth_bridge" ! -o "$berth_bridge" -j DROP 2>/dev/null ||
		iptables -I FORWARD -i "$berth_bridge" ! -o "$berth_bridge" -j DROP
	berth_start "$name" "$round"
	echo "bench-cri: round $round: berth-cri ($name)"
	prepull "$dir/cri.sock"
	local rc=0
	critest_run "$name" "$dir/cri.sock" "$work/out/$name/$round" || rc=$?
	berth_stop "$name"
	berth_current=
	return $rc
}

run_containerd() {
	local round=$1
	ctd_start >/dev/null
	echo "bench-cri: round $round: containerd $(containerd --version | awk '{print $3}')"
	prepull "$ctd_sock"
	local rc=0
	critest_run containerd "$ctd_sock" "$work/out/containerd/$round" || rc=$?
	ctd_stop
	return $rc
}

for r in $(seq "$rounds"); do
	# Every other round the other way round: neither server always runs
	# first, or after the same one.
	order=("${servers[@]}")
	if [ $((r % 2)) = 0 ]; then
		order=()
		for ((i = ${#servers[@]} - 1; i >= 0; i--)); do order+=("${servers[i]}"); done
	fi
	for s in "${order[@]}"; do
		case $s in
		berth | base) run_berth "$s" "$r" ;;
		containerd) run_containerd "$r" ;;
		esac
	done
done

# medians NAME: "benchmark/operation median_ns count" lines for server NAME,
# its rounds pooled.
medians() {
	local d=$work/out/$1 f
	for f in pod_benchmark_data container_benchmark_data image_lifecycle_benchmark_data image_listing_benchmark_data; do
		ls "$d"/*/"$f.json" >/dev/null 2>&1 || continue
		jq -s -r --arg b "${f%%_benchmark_data}" '
			def median: sort | if length == 0 then null elif length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end;
			.[0].operationsNames as $ops | [.[].datapoints[]] as $dp
			| (range($ops | length) as $i
			   | [$dp[].operationsDurationsNs[$i]] as $v
			   | "\($b)/\($ops[$i]) \($v | median) \($v | length)"),
			  # containerd runs runc create in StartContainer and tears the
			  # task down as it stops, berth in CreateContainer and
			  # RemoveContainer: each pair is compared whole too.
			  ([["CreateContainer", "StartContainer"], ["StopContainer", "RemoveContainer"]][]
			   | . as $pair | [$pair[] as $o | $ops | index($o)] as $ix
			   | select(all($ix[]; . != null))
			   | [$dp[].operationsDurationsNs | [.[$ix[]]] | add] as $v
			   | "\($b)/\($pair | join("+")) \($v | median) \($v | length)"),
			  (if ($ops | length) > 1 then [$dp[].operationsDurationsNs | add] as $v
			   | "\($b)/sum-of-ops \($v | median) \($v | length)" else empty end)' "$d"/*/"$f.json"
	done
	# The pod-and-container-from-scratch measurement, from ginkgo's report.
	jq -s -r '
		def median: sort | if length == 0 then null elif length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end;
		[.[][].SpecReports[]?.ReportEntries[]? | select(.Name == "start-container-benchmark")
		 | .Value.AsJSON | fromjson | .Measurements[]? | select(.Type == "Duration") | .Durations[]] as $v
		| if ($v | length) > 0 then "scratch/RunPod+CreateContainer+StartContainer+StopPod+RemovePod \($v | median) \($v | length)" else empty end' \
		"$d"/*/report.json
}
medians berth >"$work/berth.txt"
medians containerd >"$work/containerd.txt"
[ -z "${BERTH_CRI_BASELINE:-}" ] || medians base >"$work/base.txt"

echo
echo "critest v1.37.0 -benchmark: median of each operation in ms, $samples samples x $rounds round(s)"
echo "(scratch: one sample a round); ratio = berth/containerd (goal <= 1.00)"
awk -v baseline="${BERTH_CRI_BASELINE:-}" '
	FILENAME ~ /berth.txt$/ { order[++n] = $1; b[$1] = $2; cnt[$1] = $3; next }
	FILENAME ~ /containerd.txt$/ { c[$1] = $2; next }
	FILENAME ~ /base.txt$/ { o[$1] = $2; next }
	END {
		if (baseline != "") printf "%-66s %9s %11s %7s %9s %8s\n", "benchmark/operation", "berth", "containerd", "ratio", "base", "vs base"
		else printf "%-66s %9s %11s %7s\n", "benchmark/operation", "berth", "containerd", "ratio"
		for (i = 1; i <= n; i++) {
			k = order[i]
			r = (k in c && c[k] > 0) ? sprintf("%.2f", b[k] / c[k]) : "-"
			cs = (k in c) ? sprintf("%.2f", c[k] / 1e6) : "-"
			if (baseline != "") {
				os = (k in o) ? sprintf("%.2f", o[k] / 1e6) : "-"
				rb = (k in o && o[k] > 0) ? sprintf("%.2f", b[k] / o[k]) : "-"
				printf "%-66s %9.2f %11s %7s %9s %8s\n", k, b[k] / 1e6, cs, r, os, rb
			} else printf "%-66s %9.2f %11s %7s\n", k, b[k] / 1e6, cs, r
		}
	}' "$work/berth.txt" "$work/containerd.txt" ${BERTH_CRI_BASELINE:+"$work/base.txt"}
if [ -n "${BENCH_CRI_KEEP:-}" ]; then
	mkdir -p "$BENCH_CRI_KEEP"
	cp -r "$work/out" "$work"/*.log "$BENCH_CRI_KEEP/" 2>/dev/null || true
	echo "bench-cri: critest's outputs and berth-cri's log kept in $BENCH_CRI_KEEP"
fi
