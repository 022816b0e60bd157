# shellcheck shell=bash
# Sourced, not run: a second containerd (Debian's 1.6, its CRI plugin,
# runc) with its own config, root, state and socket, beside the containerd
# of scripts/setup-docker.sh, for critest's comparisons
# (scripts/critest-containerd.sh, scripts/bench-cri.sh):
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
#   ctd_start   stops what an earlier run left, then starts containerd and
#               waits for its answer (returns non-zero, its log shown, if
#               it never answers)
#   ctd_stop    removes every pod, stops containerd and its shims, and
#               removes its root, its state, and the network namespaces,
#               bridge and rule it left; safe to call twice
#   ctd_crictl  crictl against it
# The caller runs as root, with critest set up (scripts/setup-critest.sh).

ctd_state=${BERTH_CRITEST_DIR:-/var/lib/berth-critest}
ctd_run=/run/berth-critest
ctd_root=$ctd_state/containerd
ctd_sock=$ctd_run/containerd.sock
ctd_conf=$ctd_run/containerd.toml
ctd_pidfile=$ctd_run/containerd.pid
ctd_log=$ctd_run/containerd.log
ctd_bridge=berthctd0
ctd_subnet=10.250.0.0/24
ctd_registry=http://127.0.0.1:${BERTH_REGISTRY_PORT:-5111}

ctd_crictl() { "$ctd_state/bin/crictl" --runtime-endpoint "unix://$ctd_sock" --image-endpoint "unix://$ctd_sock" --timeout 60s "$@"; }
ctd_answers() { ctd_crictl version >/dev/null 2>&1; }

# ctd_ours PID: the process is our containerd (--config $ctd_conf) or a
# shim of it (-address $ctd_sock), never whatever reused the pid.
ctd_ours() {
	local c
	c=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) && [[ $c == *" $ctd_conf "* || $c == *" $ctd_sock "* ]]
}

ctd_stop() {
	if [ -S "$ctd_sock" ] && ctd_answers; then
		ctd_crictl rmp -a -f >/dev/null 2>&1 || echo "containerd-cri: crictl rmp -a -f failed" >&2
	fi
	local pid
	if [ -s "$ctd_pidfile" ] && pid=$(cat "$ctd_pidfile") && ctd_ours "$pid"; then
		kill -TERM "$pid"
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
	fi
	# Shims outlive containerd: those of ours (-address $ctd_sock) go too.
	for pid in $(pgrep -f containerd-shim || true); do
		ctd_ours "$pid" && kill -KILL "$pid" 2>/dev/null || true
	done
	# Mounts under our root and state, deepest first.
	{ findmnt -rn -o TARGET | grep -E "^($ctd_root|$ctd_run)(/|$)" || true; } | sort -r | while read -r m; do
		umount -l "$m" || true
	done
	# Network namespaces that appeared while it ran (containerd's cni-*).
	if [ -s "$ctd_state/netns.before" ]; then
		for ns in $(ip netns list | awk '{print $1}' | grep '^cni-' || true); do
			grep -qx "$ns" "$ctd_state/netns.before" || ip netns delete "$ns" || true
		done
	fi
	rm -f "$ctd_state/netns.before"
	if ip link show "$ctd_bridge" >/dev/null 2>&1; then ip link delete "$ctd_bridge"; fi
	while iptables -D FORWARD -i "$ctd_bridge" ! -o "$ctd_bridge" -j DROP 2>/dev/null; do :; done
	# The parents of runc's cgroups, if this run made them: critest's
	# validation specs' /test.slice, and /k8s.io, where containerd puts the
	# pods that name no parent (critest -benchmark's, under cgroupfs).
	local parent
	for parent in test.slice k8s.io; do
		if [ -e "$ctd_state/cgroup.made.$parent" ]; then
			for d in /sys/fs/cgroup/*/"$parent" /sys/fs/cgroup/"$parent"; do
				[ -d "$d" ] && rmdir "$d" 2>/dev/null || true
			done
			rm -f "$ctd_state/cgroup.made.$parent"
		fi
	done
	rm -f "$ctd_state/cgroup.made" # an earlier version's mark
	rm -rf "$ctd_root" "$ctd_run"
}

ctd_start() {
	ctd_stop # what an earlier run left
	mkdir -p "$ctd_root" "$ctd_run/net.d" "$ctd_run/certs.d"
	ip netns list | awk '{print $1}' >"$ctd_state/netns.before"
	local parent
	for parent in test.slice k8s.io; do
		compgen -G "/sys/fs/cgroup/*/$parent" >/dev/null || [ -d "/sys/fs/cgroup/$parent" ] || touch "$ctd_state/cgroup.made.$parent"
	done

	# containerd 1.6 refuses a hosts.toml without a [host] table (and then
	# falls back to the real registry): the registry is both.
	local h
	for h in registry.k8s.io k8s.gcr.io gcr.io docker.io; do
		mkdir -p "$ctd_run/certs.d/$h"
		cat >"$ctd_run/certs.d/$h/hosts.toml" <<HOSTS
server = "$ctd_registry"
[host."$ctd_registry"]
  capabilities = ["pull", "resolve"]
HOSTS
	done

	cat >"$ctd_run/net.d/10-berth-critest.conflist" <<CONF
{
  "cniVersion": "1.0.0",
  "name": "berth-critest-containerd",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$ctd_bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$ctd_subnet"}]],
        "dataDir": "$ctd_run/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CONF

	cat >"$ctd_conf" <<CONF
version = 2
root = "$ctd_root"
state = "$ctd_run/containerd"
[grpc]
  address = "$ctd_sock"
[ttrpc]
  address = "$ctd_sock.ttrpc"
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
    conf_dir = "$ctd_run/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$ctd_run/certs.d"
CONF

	iptables -I FORWARD -i "$ctd_bridge" ! -o "$ctd_bridge" -j DROP
	echo "containerd-cri: starting $(containerd --version | awk '{print $3}') on unix://$ctd_sock"
	# A guard: should a pull ever go past the registry (a hosts.toml it did
	# not take), it meets a proxy on a closed loopback port instead of a DNS
	# lookup; loopback itself is never proxied.
	HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY=127.0.0.1,localhost \
		setsid containerd --config "$ctd_conf" >>"$ctd_log" 2>&1 </dev/null &
	echo $! >"$ctd_pidfile"
	for _ in $(seq 300); do ctd_answers && break; sleep 0.1; done
	ctd_answers || {
		echo "containerd-cri: containerd did not answer; its log:" >&2
		tail -n 30 "$ctd_log" >&2
		return 1
	}
}
