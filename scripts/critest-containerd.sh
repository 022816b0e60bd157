#!/usr/bin/env bash
# The comparison the CRI server's issue quotes: critest against a second
# containerd (Debian's 1.6, its CRI plugin, runc) with its own config, root,
# state and socket; scripts/containerd-cri.sh says how it is set up (its
# images from the local registry alone, its own CNI bridge reaching nothing
# beyond the host) and cleaned up.
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

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=containerd-cri.sh
. "$here/containerd-cri.sh"
state=$ctd_state
log=$state/critest-containerd.log
report=$state/critest-containerd.json

if [ "$(id -u)" != 0 ]; then
	echo "critest-containerd: must run as root" >&2
	exit 1
fi
command -v containerd >/dev/null || "$here/setup-docker.sh"
"$here/setup-critest.sh" >/dev/null
export PATH=$state/bin:$PATH # critest -parallel runs ginkgo

trap ctd_stop EXIT
ctd_start

echo "critest-containerd: running critest $* (log: $log)"
rc=0
rm -f "$report"
(cd "$ctd_run" && critest -runtime-endpoint "unix://$ctd_sock" -image-endpoint "unix://$ctd_sock" \
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
cp "$ctd_log" "$state/critest-containerd.containerd.log"
exit "$rc"
