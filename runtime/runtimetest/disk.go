package runtimetest

import (
	"archive/tar"
	"bytes"
	"io"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/runtime"
)

func testSnapshot(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	out := newBuffer()
	cfg := h.Config(t, "/bin/sh", "-c", "echo snapped > /snapmarker; echo 0 > /counter; echo ready; i=0; while true; do i=$((i+1)); echo $i > /counter.tmp; mv /counter.tmp /counter; sleep 0.05; done")
	cfg.IO = runtime.IO{Stdout: out, Stderr: out}
	c := create(t, rt, NewID("snap"), cfg)
	if !rt.Capabilities().Snapshot {
		require.Truef(t, isNotImplemented(c.Snapshot(ctx, io.Discard)), "snapshot on a backend without it")
		return
	}
	require.NoError(t, c.Start(ctx))
	require.NoError(t, out.waitFor(ctx, "ready"))
	var archive bytes.Buffer
	require.NoError(t, c.Snapshot(ctx, &archive))
	files := tarFiles(t, &archive)
	require.Equal(t, "snapped\n", files["snapmarker"], "the snapshot holds what the container wrote")
	require.Contains(t, files, "bin/busybox")
	_, err := strconv.Atoi(strings.TrimSpace(files["counter"]))
	require.NoError(t, err, "a file replaced by rename is whole in a snapshot of one instant: %q", files["counter"])
	st, err := c.State(ctx)
	require.NoError(t, err)
	require.Equal(t, runtime.StatusRunning, st, "the container runs on after the snapshot")
}

func testRootDisk(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	caps := rt.Capabilities()
	cfg := h.Config(t, "/bin/sleep", "1000")
	cfg.DiskSize = 320 << 20 // xfs needs 300 MiB
	if !caps.RootDisk {
		_, err := rt.Create(ctx, NewID("nodisk"), cfg)
		require.Truef(t, isNotImplemented(err), "disk size on a backend without root disks: %v", err)
		return
	}
	var before syscall.Statfs_t
	require.NoError(t, syscall.Statfs(t.TempDir(), &before))
	id := NewID("disk")
	c := create(t, rt, id, cfg)
	require.NoError(t, c.Start(ctx))
	dfTotal := func() int {
		out, code := execSh(ctx, t, c, "df -k / | tail -1")
		require.Equal(t, 0, code, out)
		f := strings.Fields(out)
		require.GreaterOrEqual(t, len(f), 2, out)
		n, err := strconv.Atoi(f[1])
		require.NoError(t, err, out)
		return n
	}
	total := dfTotal()
	require.Greater(t, total, 250<<10, "df shows the disk's size (KiB)")
	require.LessOrEqual(t, total, 320<<10)
	out, code := execSh(ctx, t, c, "stat -c %A /tmp")
	require.Equal(t, "drwxrwxrwt\n", out, "the disk keeps the sticky bit of the root filesystem's /tmp (code %d)", code)

	out, code = execSh(ctx, t, c, "dd if=/dev/zero of=/fill bs=1M count=1024 2>&1")
	require.NotEqual(t, 0, code, "filling the disk fails")
	require.Contains(t, out, "No space left on device")
	var after syscall.Statfs_t
	require.NoError(t, syscall.Statfs(t.TempDir(), &after))
	used := (int64(before.Bavail) - int64(after.Bavail)) * int64(before.Bsize)
	// Other tests write to the same host filesystem meanwhile: the bound
	// is loose, but far below the 1 GiB the container tried to write.
	require.Less(t, used, int64(cfg.DiskSize)+160<<20, "the container's writes reached the host's free space")

	if !caps.DiskResize {
		require.Truef(t, isNotImplemented(c.ResizeDisk(ctx, 640<<20)), "resize without DiskResize")
		return
	}
	require.NoError(t, c.ResizeDisk(ctx, 640<<20))
	require.Greater(t, dfTotal(), total+250<<10, "the running container sees the grown disk")
	out, code = execSh(ctx, t, c, "dd if=/dev/zero of=/fill2 bs=1M count=30 2>&1")
	require.Equal(t, 0, code, "writes succeed again without a restart: %s", out)
	require.True(t, isInvalidArgument(c.ResizeDisk(ctx, 32<<20)), "shrinking is refused")
}

func tarReader(r io.Reader) *tar.Reader { return tar.NewReader(r) }

func trimDot(name string) string { return strings.TrimPrefix(name, "./") }
