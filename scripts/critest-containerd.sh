#!/usr/bin/env bash
# The comparison the CRI server's issue quotes: critest against a second
# containerd (Debian's 1.6, its CRI plugin, runc) with its own config, root,
# state and socket, beside the containerd of scripts/setup-docker.sh:
#   root  /var/lib/berth-critest/containerd   state   /run/berth-critest/containerd
#   grpc  /run/berth-critest/containerd.sock  config  /run/berth-critest/containerd.toml
# Images come from the local registry (scripts/setup-critest.sh pushed them):
# registry.k8s.io, k8s.gcr.io, gcr.io and docker.io are served by it alone
# (hosts.toml "server", no fallback to the real hosts). Pods get a CNI
# network of their own: bridge berthctd0 on 10.250.0.0/24, host-local
# (leases under the state), portmap; hairpin mode without promiscuous mode,
# which the bridge plugin refuses together; no default route and no
# forwarding out of the bridge, so pods reach nothing beyond it and the
# host. containerd adds the loopback network itself. This sandbox lacks
# CAP_SYS_RESOURCE, hence restrict_oom_score_adj.
#
# Usage: critest-containerd.sh [CRITEST FLAGS...]
#   e.g. -parallel 2, -ginkgo.focus 'Image Manager'. Specs naming NRI or
#   AppArmor are skipped (no NRI socket, no AppArmor in this kernel).
# Prints ginkgo's summary and every failure and skip with its message; the
# whole run is in /var/lib/berth-critest/critest-containerd.log, ginkgo's
# JSON report in critest-containerd.json beside it. Then it removes every pod,
# stops that containerd and removes its root, its state, and the network
# namespaces, bridge and rule it left; the exit status is critest's.
set -euo pipefail

state=${BERTH_CRITEST_DIR:-/var/lib/berth-critest}
run=/run/berth-critest
root=$state/containerd
sock=$run/containerd.sock
conf=$run/containerd.toml
pidfile=$run/containerd.pid
log=$state/critest-containerd.log
report=$state/critest-containerd.json
bridge=berthctd0
subnet=10.250.0.0/24
registry=http://127.0.0.1:${BERTH_REGISTRY_PORT:-5111}
here=$(cd "$(dirname "$0")" && pwd)

if [ "$(id -u)" != 0 ]; then
	echo "critest-containerd: must run as root" >&2
	exit 1
fi
command -v containerd >/dev/null || "$here/setup-docker.sh"
"$here/setup-critest.sh" >/dev/null
export PATH=$state/bin:$PATH # critest -parallel runs ginkgo

crictl() { "$state/bin/crictl" --runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock" --timeout 60s "$@"; }
answers() { crictl version >/dev/null 2>&1; }

# ours PID: the process is our containerd (--config $conf) or a shim of it
# (-address $sock), never whatever reused the pid.
ours() {
	local c
	c=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) && [[ $c == *" $conf "* || $c == *" $sock "* ]]
}

stop() {
	if [ -S "$sock" ] && answers; then
		crictl rmp -a -f >/dev/null 2>&1 || echo "critest-containerd: crictl rmp -a -f failed" >&2
	fi
	local pid
	if [ -s "$pidfile" ] && pid=$(cat "$pidfile") && ours "$pid"; then
		kill -TERM "$pid"
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
	fi
	# Shims outlive containerd: those of ours (-address $sock) go too.
	for pid in $(pgrep -f containerd-shim || true); do
		ours "$pid" && kill -KILL "$pid" 2>/dev/null || true
	done
	# Mounts under our root and state, deepest first.
	{ findmnt -rn -o TARGET | grep -E "^($root|$run)(/|$)" || true; } | sort -r | while read -r m; do
		umount -l "$m" || true
	done
	# Network namespaces that appeared while it ran (containerd's cni-*).
	if [ -s "$state/netns.before" ]; then
		for ns in $(ip netns list | awk '{print $1}' | grep '^cni-' || true); do
			grep -qx "$ns" "$state/netns.before" || ip netns delete "$ns" || true
		done
	fi
	rm -f "$state/netns.before"
	if ip link show "$bridge" >/dev/null 2>&1; then ip link delete "$bridge"; fi
	while iptables -D FORWARD -i "$bridge" ! -o "$bridge" -j DROP 2>/dev/null; do :; done
	# runc's cgroups under critest's parent (/test.slice), if we made it.
	if [ -e "$state/cgroup.made" ]; then
		for d in /sys/fs/cgroup/*/test.slice /sys/fs/cgroup/test.slice; do
			[ -d "$d" ] && rmdir "$d" 2>/dev/null || true
		done
		rm -f "$state/cgroup.made"
	fi
	rm -rf "$root" "$run"
}

stop # what an earlier run left
mkdir -p "$root" "$run/net.d" "$run/certs.d"
ip netns list | awk '{print $1}' >"$state/netns.before"
ls -d /sys/fs/cgroup/*/test.slice /sys/fs/cgroup/test.slice >/dev/null 2>&1 || touch "$state/cgroup.made"
trap stop EXIT

# containerd 1.6 refuses a hosts.toml without a [host] table (and then
# falls back to the real registry): the registry is both.
for h in registry.k8s.io k8s.gcr.io gcr.io docker.io; do
	mkdir -p "$run/certs.d/$h"
	cat >"$run/certs.d/$h/hosts.toml" <<HOSTS
server = "$registry"
[host."$registry"]
  capabilities = ["pull", "resolve"]
HOSTS
done

cat >"$run/net.d/10-berth-critest.conflist" <<CONF
{
  "cniVersion": "1.0.0",
  "name": "berth-critest-containerd",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$subnet"}]],
        "dataDir": "$run/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CONF

cat >"$conf" <<CONF
version = 2
root = "$root"
state = "$run/containerd"
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$run/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$run/certs.d"
CONF

iptables -I FORWARD -i "$bridge" ! -o "$bridge" -j DROP
echo "critest-containerd: starting $(containerd --version | awk '{print $3}') on unix://$sock"
# A guard: should a pull ever go past the registry (a hosts.toml it did
# not take), it meets a proxy on a closed loopback port instead of a DNS
# lookup; loopback itself is never proxied.
HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY=127.0.0.1,localhost \
	setsid containerd --config "$conf" >>"$run/containerd.log" 2>&1 </dev/null &
echo $! >"$pidfile"
for _ in $(seq 300); do answers && break; sleep 0.1; done
answers || {
	echo "critest-containerd: containerd did not answer; its log:" >&2
	tail -n 30 "$run/containerd.log" >&2
	exit 1
}

echo "critest-containerd: running critest $* (log: $log)"
rc=0
rm -f "$report"
(cd "$run" && critest -runtime-endpoint "unix://$sock" -image-endpoint "unix://$sock" \
	-ginkgo.skip 'NRI|AppArmor' -ginkgo.no-color -ginkgo.json-report "$report" "$@") >"$log" 2>&1 || rc=$?
# ginkgo's closing lines, then every failure and skip with its message
# (the first line), from the JSON report.
grep -E '^(Ran [0-9]+ of [0-9]+ Specs|(FAIL|SUCCESS)! -- )' "$log" || tail -n 20 "$log"
if [ -s "$report" ]; then
	# A failure's rpc error says the most; else its first line.
	jq -r '.[].SpecReports[] | select(.LeafNodeType == "It" and .State != "passed" and (.Failure.Message // "") != "")
		| (.Failure.Message | split("\n") | map(sub("^\\s+"; "")) | map(select(. != ""))) as $m
		| "  \(.State): \((.ContainerHierarchyTexts // []) + [.LeafNodeText] | join(" "))\n      \(([$m[] | select(test("rpc error"))] + $m)[0])"' "$report"
	echo "  skipped, not selected (-ginkgo.skip, -ginkgo.focus): $(jq '[.[].SpecReports[]
		| select(.LeafNodeType == "It" and .State == "skipped" and (.Failure.Message // "") == "")] | length' "$report")"
fi
cp "$run/containerd.log" "$state/critest-containerd.containerd.log"
exit "$rc"
