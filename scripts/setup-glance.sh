#!/usr/bin/env bash
# Installs (from Debian's packages) and starts a private OpenStack Glance for
# berth's image tests: glance-api without keystone (noauth), a sqlite
# database and a file store, listening on 127.0.0.1 only, at the fixed URL
# the tests use (BERTH_GLANCE_URL, default http://127.0.0.1:9292).
# Idempotent: when Glance already answers it returns at once.
set -euo pipefail

port=${BERTH_GLANCE_PORT:-9292}
url="http://127.0.0.1:$port"
state=${BERTH_GLANCE_DIR:-/var/lib/berth-glance}

answers() { curl -fsS -m 2 -o /dev/null "$url/versions" 2>/dev/null; }

if answers; then
	echo "setup-glance: glance-api answers at $url"
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "setup-glance: must run as root (installs glance-api)" >&2
	exit 1
fi

missing=()
for p in glance-api curl; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup-glance: installing ${missing[*]} (about two minutes)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# The package's own service is not started: policy-rc.d or the lack of
	# systemd stops it, and it would use keystone anyway.
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$state/images"
conf="$state/glance-api.conf"
cat >"$conf.tmp" <<CONF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $port
workers = 1
log_file = $state/glance-api.log
[database]
connection = sqlite:///$state/glance.sqlite
[paste_deploy]
flavor =
config_file = /etc/glance/glance-api-paste.ini
[glance_store]
stores = file
default_store = file
filesystem_store_datadir = $state/images/
[oslo_policy]
enforce_new_defaults = false
enforce_scope = false
CONF
mv "$conf.tmp" "$conf"

# db_sync is idempotent; it only creates or upgrades the schema.
glance-manage --config-file "$conf" db_sync >>"$state/db_sync.log" 2>&1 || {
	echo "setup-glance: glance-manage db_sync failed, see $state/db_sync.log" >&2
	exit 1
}

pidfile="$state/glance-api.pid"
if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
	echo "setup-glance: glance-api (pid $(cat "$pidfile")) is starting"
else
	setsid glance-api --config-file "$conf" >>"$state/glance-api.out" 2>&1 </dev/null &
	echo $! >"$pidfile"
fi

for _ in $(seq 120); do
	if answers; then
		echo "setup-glance: glance-api answers at $url"
		exit 0
	fi
	if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
		echo "setup-glance: glance-api exited; see $state/glance-api.log and $state/glance-api.out" >&2
		tail -n 20 "$state/glance-api.out" "$state/glance-api.log" >&2 2>/dev/null || true
		exit 1
	fi
	sleep 0.5
done
echo "setup-glance: glance-api did not answer at $url within 60 s" >&2
exit 1
