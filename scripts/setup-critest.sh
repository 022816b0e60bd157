#!/usr/bin/env bash
# Builds, offline, what the Kubernetes CRI validation suite needs on this
# host, under /var/lib/berth-critest (BERTH_CRITEST_DIR overrides):
#   bin/critest, bin/crictl  from sigs.k8s.io/cri-tools v1.37.0 (the Go module
#                            proxy), built from a writable copy of the module
#                            in src/; bin/ginkgo too, which critest -parallel N runs
#   the test images          critest pulls by their upstream names (gcr.io,
#                            registry.k8s.io, k8s.gcr.io), built by
#                            scripts/critestimages from Debian's packages and
#                            pushed to the local registry (scripts/setup-registry.sh)
#                            under the same paths, so that a CRI server whose
#                            mirrors for those hosts point at the registry finds them
#   mirrors                  those mirrors as berth's flags, one a line:
#                            berth-cri $(cat /var/lib/berth-critest/mirrors) ...
#   images                   the references pushed, one a line
# Not pushed: gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2...,
# pinned by a digest that no offline build can give; its spec fails.
#
# setup.sh runs it: cri's TestCritestImages runs critest's image specs
# against berth's CRI server with these images. scripts/critest-containerd.sh
# runs critest against a containerd of its own with them, for comparison.
#
# Idempotent: with the tools of this version in place, the images built by
# the current scripts/critestimages and all of them in the registry, it
# builds and pushes nothing.
set -euo pipefail

version=v1.37.0
state=${BERTH_CRITEST_DIR:-/var/lib/berth-critest}
bin=$state/bin
registry=127.0.0.1:${BERTH_REGISTRY_PORT:-5111}
here=$(cd "$(dirname "$0")" && pwd)

if [ "$(id -u)" != 0 ]; then
	echo "setup-critest: must run as root (installs packages, writes $state)" >&2
	exit 1
fi

"$here/setup-registry.sh"

# The images take pgrep and ipcs, and the libraries of those, of busybox
# and of nginx, from this host; critest-containerd.sh reads critest's
# report with jq.
missing=()
for p in procps util-linux curl jq libc6 libcrypt1 libpcre2-8-0 libssl3 zlib1g; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup-critest: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
fi
mkdir -p "$bin"

# --- critest, crictl, ginkgo -------------------------------------------------

# says LINE CMD...: CMD prints LINE (read whole: grep -q would leave it
# writing to a closed pipe).
says() {
	local line=$1 out
	shift
	out=$("$@" 2>/dev/null) && grep -qxF "$line" <<<"$out"
}

tools_ok() {
	[ -x "$bin/ginkgo" ] &&
		says "critest version: ${version#v}" "$bin/critest" -version &&
		says "crictl version ${version#v}" "$bin/crictl" --version
}

if tools_ok; then
	echo "setup-critest: critest and crictl $version in $bin"
else
	echo "setup-critest: building critest, crictl and ginkgo from sigs.k8s.io/cri-tools@$version (a few minutes)"
	dir=$(cd / && go mod download -json "sigs.k8s.io/cri-tools@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -d "$dir" ] || {
		echo "setup-critest: go mod download gave no directory for sigs.k8s.io/cri-tools@$version" >&2
		exit 1
	}
	# The module cache is read-only, and go test -c writes next to it.
	rm -rf "$state/src"
	cp -r "$dir" "$state/src"
	chmod -R u+w "$state/src"
	ldflags="-X sigs.k8s.io/cri-tools/pkg/version.Version=${version#v}"
	(
		cd "$state/src"
		# Built as cri-tools' Makefile builds them (static), with the
		# modules its go.sum names.
		export CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"
		go test -c -o "$bin/critest.tmp" -ldflags "$ldflags" ./cmd/critest
		go build -o "$bin/crictl.tmp" -ldflags "$ldflags" ./cmd/crictl
		go build -o "$bin/ginkgo.tmp" github.com/onsi/ginkgo/v2/ginkgo
	)
	for t in critest crictl ginkgo; do mv "$bin/$t.tmp" "$bin/$t"; done
	tools_ok || {
		echo "setup-critest: the tools built do not report version $version" >&2
		exit 1
	}
	echo "setup-critest: critest, crictl and ginkgo in $bin"
fi

# --- the test images ---------------------------------------------------------

# The stamp names the builder's sources and this script: a change to them
# builds again (a newer Debian package alone does not).
stamp=$(cat "$here"/critestimages/*.go "$here/setup-critest.sh" | sha256sum | cut -d' ' -f1)
out=$state/images-oci

# manifest_ok REF: the registry has REF (host dropped: the mirrors map
# every host to the registry's root).
manifest_ok() {
	local path=${1#*/}
	curl -fsS -m 5 -o /dev/null -I \
		-H 'Accept: application/vnd.oci.image.manifest.v1+json' \
		"http://$registry/v2/${path%:*}/manifests/${path##*:}" 2>/dev/null
}

images_ok() {
	[ "$(cat "$state/images.stamp" 2>/dev/null)" = "$stamp" ] && [ -s "$out/refs" ] || return 1
	local name ref
	while read -r name ref; do
		manifest_ok "$ref" || return 1
	done <"$out/refs"
}

if images_ok; then
	echo "setup-critest: test images in the registry at $registry"
else
	echo "setup-critest: building the test images from Debian's packages"
	rm -f "$state/images.stamp"
	work=$state/images-work
	rm -rf "$work"
	mkdir -p "$work/debs" "$work/pkgs"
	# Downloaded, not installed: busybox (dynamic) conflicts with the
	# busybox-static the fixtures use, and nginx's package starts a server.
	debs=(busybox nginx nginx-common)
	download() { (cd "$work/debs" && apt-get download -q -o APT::Sandbox::User=root "${debs[@]}" >/dev/null); }
	download || { apt-get update -qq && download; }
	for d in "$work"/debs/*.deb; do dpkg-deb -x "$d" "$work/pkgs"; done
	# Static: the builder is also the images' pause and nnp.
	(cd "$here/.." && CGO_ENABLED=0 go build -trimpath -ldflags=-s -o "$work/critestimages" ./scripts/critestimages)
	"$work/critestimages" -pkgs "$work/pkgs" -out "$out"
	while read -r name ref; do
		echo "setup-critest: pushing $ref"
		skopeo copy -q --dest-tls-verify=false "oci:$out/layout:$name" "docker://$registry/${ref#*/}"
	done <"$out/refs"
	echo "$stamp" >"$state/images.stamp"
	rm -rf "$work"
	images_ok || {
		echo "setup-critest: the registry does not serve every image pushed" >&2
		exit 1
	}
	echo "setup-critest: test images pushed to $registry"
fi
cut -d' ' -f2 "$out/refs" >"$state/images.tmp"
mv "$state/images.tmp" "$state/images"

# berth's mirror flags (HOST=URL) for every host critest names, Docker Hub
# too (critest names none of its images, a CRI test might).
: >"$state/mirrors.tmp"
for h in registry.k8s.io k8s.gcr.io gcr.io docker.io; do
	echo "--registry-mirror $h=http://$registry" >>"$state/mirrors.tmp"
done
mv "$state/mirrors.tmp" "$state/mirrors"
echo "setup-critest: ready ($bin/critest, mirror flags in $state/mirrors)"
