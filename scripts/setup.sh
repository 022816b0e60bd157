#!/usr/bin/env bash
# Installs (from Debian's packages) and starts what berth's demo and tests
# need. Idempotent: a second run installs and starts nothing new.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
	echo "setup: must run as root (containers, cgroups, mounts and loop devices need it)" >&2
	exit 1
fi

packages=(
	busybox-static  # the root filesystem fixture
	runc lxc        # peers in the benchmarks
	libseccomp-dev pkg-config  # the embedded engine's seccomp (go build -tags seccomp)
	e2fsprogs xfsprogs btrfs-progs squashfs-tools dosfstools util-linux  # volumes
	erofs-utils genisoimage ntfs-3g exfatprogs cryptsetup-bin fdisk      # probe tests: one image per format
)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# cgroup v1 hybrid or v2: the embedded engine needs the memory, cpu and
# pids controllers and a freezer (v1's controller, v2's cgroup.freeze).
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
	for c in memory cpu pids; do
		grep -qw "$c" /sys/fs/cgroup/cgroup.controllers || { echo "setup: cgroup v2 controller $c is not available" >&2; exit 1; }
	done
	[ -e /sys/fs/cgroup/init.scope/cgroup.freeze ] || ls /sys/fs/cgroup/*/cgroup.freeze >/dev/null 2>&1 ||
		{ echo "setup: cgroup v2 has no freezer (cgroup.freeze)" >&2; exit 1; }
else
	for c in memory cpu pids freezer; do
		[ -d "/sys/fs/cgroup/$c" ] || { echo "setup: cgroup v1 controller $c is not mounted" >&2; exit 1; }
	done
fi
"$(dirname "$0")/setup-docker.sh" # containerd, and the plain and userns-remap dockerd of the docker backend
"$(dirname "$0")/setup-glance.sh" # glance-api (noauth, sqlite, file store) on 127.0.0.1:9292 for image/glance
"$(dirname "$0")/setup-registry.sh" # docker-registry (distribution 2.8, file store) on 127.0.0.1:5111, and skopeo
"$(dirname "$0")/setup-critest.sh" # critest and crictl (cri-tools v1.37.0), critest's images built offline and pushed to the registry
"$(dirname "$0")/setup-cni.sh" # the CNI plugins (containernetworking-plugins) and berth's default pod network in /etc/berth/cni/net.d
echo "setup: ready"
