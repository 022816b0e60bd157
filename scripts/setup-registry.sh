#!/usr/bin/env bash
# Installs (from Debian's packages) and starts a private OCI registry for
# berth's image tests: Debian's docker-registry (distribution 2.8) with a
# filesystem store and deletes enabled, listening on 127.0.0.1 only, at
# 127.0.0.1:5111 (BERTH_REGISTRY_PORT overrides), state under
# /var/lib/berth-registry (BERTH_REGISTRY_DIR overrides), and skopeo to talk
# to it. The access log goes to $state/registry.log.
# Idempotent: when the registry answers and skopeo is in place it returns at once.
set -euo pipefail

port=${BERTH_REGISTRY_PORT:-5111}
url="http://127.0.0.1:$port"
state=${BERTH_REGISTRY_DIR:-/var/lib/berth-registry}
policy=/etc/containers/policy.json

answers() { curl -fsS -m 2 -o /dev/null "$url/v2/" 2>/dev/null; }

if answers && [ -e "$policy" ] && command -v skopeo >/dev/null; then
	echo "setup-registry: registry answers at $url"
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "setup-registry: must run as root (installs docker-registry and skopeo)" >&2
	exit 1
fi

missing=()
for p in docker-registry skopeo curl; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup-registry: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# The package's own service is not used: this script starts the binary
	# (there may be no init system). Another apt run may hold dpkg's lock.
	apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
fi
bin=/usr/bin/docker-registry
[ -x "$bin" ] || {
	echo "setup-registry: $bin is missing although docker-registry is installed" >&2
	exit 1
}

# skopeo refuses to work without a signature policy; Debian's default is
# this one. An existing policy is left as it is.
if [ ! -e "$policy" ]; then
	mkdir -p "$(dirname "$policy")"
	printf '%s\n' '{"default":[{"type":"insecureAcceptAnything"}]}' >"$policy.tmp"
	mv "$policy.tmp" "$policy"
	echo "setup-registry: wrote $policy"
fi

if answers; then
	echo "setup-registry: registry answers at $url"
	exit 0
fi

mkdir -p "$state/data"
conf="$state/config.yml"
cat >"$conf.tmp" <<CONF
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $state/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  headers:
    X-Content-Type-Options: [nosniff]
CONF
mv "$conf.tmp" "$conf"

pidfile="$state/registry.pid"
if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null &&
	[ "$(cat "/proc/$(cat "$pidfile")/comm" 2>/dev/null)" = docker-registry ]; then
	echo "setup-registry: docker-registry (pid $(cat "$pidfile")) is starting"
else
	echo "setup-registry: starting docker-registry on $url"
	setsid "$bin" serve "$conf" >>"$state/registry.log" 2>&1 </dev/null &
	echo $! >"$pidfile"
fi

deadline=$((SECONDS + 30))
while [ "$SECONDS" -lt "$deadline" ]; do
	if answers; then
		echo "setup-registry: registry answers at $url"
		exit 0
	fi
	if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
		echo "setup-registry: docker-registry exited; see $state/registry.log" >&2
		tail -n 20 "$state/registry.log" >&2 || true
		exit 1
	fi
	sleep 0.5
done
echo "setup-registry: registry did not answer at $url within 30 s; see $state/registry.log" >&2
tail -n 20 "$state/registry.log" >&2 || true
exit 1
