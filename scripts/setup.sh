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
	e2fsprogs xfsprogs btrfs-progs squashfs-tools dosfstools util-linux  # volumes
	erofs-utils genisoimage ntfs-3g cryptsetup-bin fdisk                 # probe tests: one image per format
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

# cgroup v1 hybrid or v2: the embedded engine needs the freezer, memory,
# cpu and pids controllers.
for c in memory cpu pids freezer; do
	if [ ! -d "/sys/fs/cgroup/$c" ] && ! grep -qw "$c" /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
		echo "setup: cgroup controller $c is not available" >&2
		exit 1
	fi
done
"$(dirname "$0")/setup-docker.sh" # containerd, and the plain and userns-remap dockerd of the docker backend
"$(dirname "$0")/setup-glance.sh" # glance-api (noauth, sqlite, file store) on 127.0.0.1:9292 for image/glance
echo "setup: ready"
