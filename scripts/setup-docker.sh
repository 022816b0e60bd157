#!/usr/bin/env bash
# Installs Docker from Debian's packages if missing and starts what berth's
# docker backend tests use: containerd and two dockerd daemons,
#   plain   the default daemon on unix:///run/docker.sock
#   userns  a daemon with --userns-remap=default on unix:///run/berth-docker-userns.sock
#           (its own data root, exec root, pidfile and containerd namespace;
#           no bridge, no iptables rules)
# Both run with --live-restore: containers keep running while their daemon
# restarts. Logs go to /var/log/berth-{containerd,dockerd,dockerd-userns}.log.
#
# Usage: setup-docker.sh                 install and start whatever does not answer
#        setup-docker.sh restart NAME    stop daemon NAME (plain|userns), start it again
#        setup-docker.sh stop NAME       stop daemon NAME
# Idempotent: with everything answering it installs and starts nothing.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
	echo "setup-docker: must run as root" >&2
	exit 1
fi

containerd_sock=/run/containerd/containerd.sock

# name -> socket, pidfile, log, extra flags. The plain daemon keeps Docker's
# default roots and network; the userns one has everything of its own.
daemon_sock() {
	case $1 in
	plain) echo /run/docker.sock ;;
	userns) echo /run/berth-docker-userns.sock ;;
	*)
		echo "setup-docker: unknown daemon $1 (plain or userns)" >&2
		return 1
		;;
	esac
}
daemon_pidfile() { case $1 in plain) echo /run/docker.pid ;; userns) echo /run/berth-docker-userns.pid ;; esac; }
daemon_log() { case $1 in plain) echo /var/log/berth-dockerd.log ;; userns) echo /var/log/berth-dockerd-userns.log ;; esac; }
daemon_flags() {
	case $1 in
	plain) echo "--live-restore --bridge=none --iptables=false" ;;
	userns)
		echo "--userns-remap=default --live-restore --bridge=none --iptables=false" \
			"--data-root=/var/lib/berth-docker-userns --exec-root=/run/berth-docker-userns" \
			"--containerd-namespace=berth-userns --containerd-plugins-namespace=berth-userns-plugins"
		;;
	esac
}

# The Debian CLI matches the Debian daemon; another one earlier in PATH
# would do as well, but this one is known to be there after the install.
docker_cli() {
	if [ -x /usr/bin/docker ]; then /usr/bin/docker "$@"; else docker "$@"; fi
}

answers() { # name
	docker_cli -H "unix://$(daemon_sock "$1")" version --format '{{.Server.APIVersion}}' >/dev/null 2>&1
}

wait_until() { # seconds description command...
	local deadline=$((SECONDS + $1)) what=$2
	shift 2
	until "$@"; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			echo "setup-docker: $what did not come up; see its log" >&2
			return 1
		fi
		sleep 0.1
	done
}

install_missing() {
	local missing=() p
	for p in docker.io containerd runc; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		echo "setup-docker: installing ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		# The packages' own service units are not used: this script starts
		# the daemons (there may be no init system).
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
}

containerd_answers() { ctr --address "$containerd_sock" version >/dev/null 2>&1; }

start_containerd() {
	containerd_answers && return 0
	echo "setup-docker: starting containerd"
	setsid containerd >>/var/log/berth-containerd.log 2>&1 </dev/null &
	wait_until 30 containerd containerd_answers
}

start_daemon() { # name
	local name=$1 sock pidfile
	answers "$name" && return 0
	sock=$(daemon_sock "$name")
	pidfile=$(daemon_pidfile "$name")
	echo "setup-docker: starting dockerd ($name) on unix://$sock"
	# shellcheck disable=SC2046 # the flags are words
	setsid dockerd --containerd="$containerd_sock" -H "unix://$sock" --pidfile="$pidfile" \
		$(daemon_flags "$name") >>"$(daemon_log "$name")" 2>&1 </dev/null &
	wait_until 60 "dockerd ($name)" answers "$name"
}

stop_daemon() { # name
	local name=$1 pidfile pid
	pidfile=$(daemon_pidfile "$name")
	[ -s "$pidfile" ] || return 0
	pid=$(cat "$pidfile")
	kill -0 "$pid" 2>/dev/null || return 0
	# Only a dockerd is stopped this way, never whatever reused the pid.
	[ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] || return 0
	kill -TERM "$pid"
	wait_until 60 "stop of dockerd ($name)" eval "! kill -0 $pid 2>/dev/null"
}

case ${1:-} in
"")
	install_missing
	start_containerd
	start_daemon plain
	start_daemon userns
	echo "setup-docker: ready (plain: unix://$(daemon_sock plain), userns: unix://$(daemon_sock userns))"
	;;
restart)
	daemon_sock "${2:-}" >/dev/null
	stop_daemon "$2"
	start_containerd
	start_daemon "$2"
	;;
stop)
	daemon_sock "${2:-}" >/dev/null
	stop_daemon "$2"
	;;
*)
	echo "usage: setup-docker.sh [restart|stop plain|userns]" >&2
	exit 2
	;;
esac
