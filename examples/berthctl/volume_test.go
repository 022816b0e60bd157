package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func volImage(t *testing.T, mkfs ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "vol.img")
	f, err := os.Create(p)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(32<<20))
	require.NoError(t, f.Close())
	if len(mkfs) > 0 {
		out, err := exec.Command(mkfs[0], append(mkfs[1:], p)...).CombinedOutput()
		require.NoError(t, err, "%s", out)
	}
	return p
}

func TestVolumeProbe(t *testing.T) {
	requireEngine(t)
	ext4 := volImage(t, "mkfs.ext4", "-q", "-F")
	require.Equal(t, "ext4 (33554432 bytes of 33554432)\n", ok(t, "volume", "probe", ext4))
	vfat := volImage(t, "mkfs.vfat")
	r := berthctl(t, "volume", "probe", vfat)
	requireFailure(t, r, "invalid-argument")
	require.Contains(t, r.stderr, `"vfat" is not allowed`)
	require.Equal(t, "vfat (33554432 bytes of 33554432)\n", ok(t, "--allow-fs", "vfat", "volume", "probe", vfat), "--allow-fs relaxes the whitelist")
	r = berthctl(t, "volume", "probe", volImage(t))
	requireFailure(t, r, "invalid-argument")
	require.Contains(t, r.stderr, "no known on-disk signature")
	requireFailure(t, berthctl(t, "--allow-fs", "swap", "volume", "probe", ext4), "invalid-argument")

	// Cut to half: the refusal says the type and the numbers.
	require.NoError(t, os.Truncate(ext4, 16<<20))
	r = berthctl(t, "volume", "probe", ext4)
	requireFailure(t, r, "invalid-argument")
	require.Contains(t, r.stderr, "ext4: superblock claims 32768 blocks of 1024 bytes (33554432 bytes) but the device holds 16777216 bytes: bad geometry")
}

func TestRunWithVolumes(t *testing.T) {
	requireEngine(t)
	img := volImage(t, "mkfs.ext4", "-q", "-F")
	cleanup(t, "vols")
	out := ok(t, "run", "--rm", "--name", "vols", "--rootfs", rootfs, "--volume", img+":/data", "--volume", "tmpfs:/scratch:size=1m",
		"--", "/bin/sh", "-c", "grep -E ' /(data|scratch) ' /proc/mounts; echo x > /data/f && echo ok")
	require.Contains(t, out, " /data ext4 rw,nosuid,nodev")
	require.Contains(t, out, " /scratch tmpfs ")
	require.Contains(t, out, "ok")
	mi, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	require.NotContains(t, string(mi), filepath.Join(stateRoot, "volumes", "mnt"), "host mount gone after --rm")

	r := berthctl(t, "run", "--rm", "--rootfs", rootfs, "--volume", img+":/dev/xvdb:raw", "--", "/bin/true")
	requireFailure(t, r, "failed-precondition")
	out = ok(t, "run", "--rm", "--userns", "--rootfs", rootfs, "--volume", img+":/dev/xvdb:raw",
		"--", "/bin/sh", "-c", "dd if=/dev/xvdb of=/dev/null bs=512 count=1 2>/dev/null && echo raw-read; mount /dev/xvdb /mnt 2>/dev/null || echo mount-refused")
	require.Contains(t, out, "raw-read")
	require.Contains(t, out, "mount-refused")
}

func TestAttachDetach(t *testing.T) {
	requireEngine(t)
	img := volImage(t, "mkfs.ext4", "-q", "-F")
	cleanup(t, "hot")
	ok(t, "create", "--name", "hot", "--rootfs", rootfs, "--", "/bin/sleep", "300")
	ok(t, "start", "hot")
	ok(t, "attach", "hot", img+":/vol:ro")
	out := ok(t, "exec", "hot", "--", "/bin/sh", "-c", "grep ' /vol ' /proc/mounts; touch /vol/x 2>/dev/null || echo read-only")
	require.Contains(t, out, " /vol ext4 ro,nosuid,nodev")
	require.Contains(t, out, "read-only")
	requireFailure(t, berthctl(t, "attach", "hot", img+":/vol"), "already-exists")
	ok(t, "detach", "hot", "/vol")
	out = ok(t, "exec", "hot", "--", "/bin/sh", "-c", "grep ' /vol ' /proc/mounts || echo gone")
	require.Equal(t, "gone\n", out)
	requireFailure(t, berthctl(t, "detach", "hot", "/vol"), "not-found")
	requireFailure(t, berthctl(t, "attach", "hot", "nocolon"), "invalid-argument")
	require.False(t, strings.Contains(ok(t, "ps"), "vol"))
}
