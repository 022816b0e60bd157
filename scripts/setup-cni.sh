#!/usr/bin/env bash
# Installs the CNI plugins (Debian's containernetworking-plugins, in
# /usr/lib/cni) and writes berth's default pod network for the CRI server
# (package cri/network) where berth-cri reads it:
#   /etc/berth/cni/net.d/10-berth.conflist   (BERTH_CNI_CONF_DIR overrides the directory)
# a bridge, berth-cni0, that is the pods' gateway and masquerades their
# traffic out; addresses from 10.99.0.0/16 (host-local, leases under
# /var/lib/berth-cri/cni/ipam) with a default route; host ports (portmap,
# reachable from the host's loopback too); and the firewall plugin's
# forwarding rules for the pods' addresses, which a host whose FORWARD
# policy is DROP (Docker sets it) needs. libcni's cache, and the pins of
# the pods' network namespaces, go under /var/lib/berth-cri/cni/cache.
# cri/network's tests run the same chain of plugins on networks of their
# own.
#
# Idempotent: with the plugins installed and the file as this script
# writes it, it changes nothing. A file that differs (an operator's edit)
# is left alone, and said so.
set -euo pipefail

conf_dir=${BERTH_CNI_CONF_DIR:-/etc/berth/cni/net.d}
state=/var/lib/berth-cri/cni
conf=$conf_dir/10-berth.conflist

if [ "$(id -u)" != 0 ]; then
	echo "setup-cni: must run as root (installs packages, writes $conf_dir)" >&2
	exit 1
fi

missing=()
for p in containernetworking-plugins iptables; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup-cni: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
fi
for p in bridge host-local loopback portmap firewall; do
	[ -x "/usr/lib/cni/$p" ] || {
		echo "setup-cni: /usr/lib/cni/$p is missing (containernetworking-plugins)" >&2
		exit 1
	}
done

mkdir -p "$conf_dir"
mkdir -p -m 0700 "$state" "$state/cache" "$state/ipam"
# hairpinMode lets a pod reach itself through its own host port; the
# bridge plugin refuses it together with promiscMode.
want=$(
	cat <<CONF
{
  "cniVersion": "1.0.0",
  "name": "berth",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "berth-cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "10.99.0.0/16"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$state/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
    {"type": "firewall"}
  ]
}
CONF
)
if [ ! -e "$conf" ]; then
	printf '%s\n' "$want" >"$conf.tmp"
	mv "$conf.tmp" "$conf"
	echo "setup-cni: wrote $conf"
elif [ "$(cat "$conf")" = "$want" ]; then
	echo "setup-cni: $conf in place"
else
	echo "setup-cni: $conf differs from berth's default; left as it is"
fi
first=$(find "$conf_dir" -maxdepth 1 -type f \( -name '*.conf' -o -name '*.conflist' -o -name '*.json' \) | LC_ALL=C sort | head -n 1)
[ "$first" = "$conf" ] || echo "setup-cni: note: $first comes first in $conf_dir: it is the pods' network, not $conf"
