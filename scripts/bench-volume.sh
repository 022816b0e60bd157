#!/usr/bin/env bash
# Times attach+detach of an ext4 image volume through berth's volume manager
# against `mount -o loop` + `umount -d` of the same image, in one run, and
# prints the medians of 5 runs and the ratio (target <= 1.2).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(go test -tags seccomp -run='^$' -bench=BenchmarkAttachDetach -benchtime=40x -count=5 ./volume/)
echo "$out" | grep -E '^Benchmark'
echo "$out" | awk '
	/BenchmarkAttachDetach\/berth/      { b[nb++] = $3 }
	/BenchmarkAttachDetach\/mount-loop/ { m[nm++] = $3 }
	function median(a, n,   i, j, t) {
		for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
		return n % 2 ? a[int(n/2)] : (a[n/2-1] + a[n/2]) / 2
	}
	END {
		mb = median(b, nb); mm = median(m, nm)
		printf "attach+detach of an ext4 image, median of %d runs\n", nb
		printf "  berth volume manager     %8.2f ms\n", mb / 1e6
		printf "  mount -o loop; umount -d %8.2f ms\n", mm / 1e6
		printf "  berth/mount = %.2f (target <= 1.20)\n", mb / mm
	}'
