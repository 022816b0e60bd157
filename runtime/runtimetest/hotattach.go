package runtimetest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/volume"
)

func testVolumeHotAttach(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	caps := rt.Capabilities()
	img := ext4Image(t)
	if !caps.HotAttach {
		c := create(t, rt, NewID("nohot"), h.Config(t, "/bin/sleep", "1000"))
		require.NoError(t, c.Start(ctx))
		err := c.AttachVolume(ctx, volume.Spec{Source: img, Destination: "/data"})
		require.Truef(t, isNotImplemented(err), "hot attach on a backend without it: %v", err)
		return
	}
	require.True(t, caps.Exec, "hot attach is checked through exec")
	cfg := h.Config(t, "/bin/sleep", "1000")
	cfg.UserNamespace = caps.UserNamespace
	id := NewID("hot")
	c := create(t, rt, id, cfg)
	require.NoError(t, c.Start(ctx))

	require.NoError(t, c.AttachVolume(ctx, volume.Spec{Source: img, Destination: "/data"}))
	got := shOut(ctx, t, c, "cat /proc/mounts; echo hot > /data/marker && echo wrote")
	line := mountsLine(got, "/data")
	require.NotEmpty(t, line, "attached volume visible without a restart: %s", got)
	require.Contains(t, line, "nosuid")
	require.Contains(t, line, "nodev")
	require.Contains(t, got, "wrote")
	err := c.AttachVolume(ctx, volume.Spec{Source: img, Destination: "/other"})
	require.Truef(t, isFailedPrecondition(err), "a read-write volume is attached once: %v", err)

	require.NoError(t, c.AttachVolume(ctx, volume.Spec{Destination: "/scratch", TmpfsSize: 4 << 20}))
	got = shOut(ctx, t, c, "echo t > /scratch/f && echo tmpfs-ok; grep ' /scratch ' /proc/mounts")
	require.Contains(t, got, "tmpfs-ok")
	require.Contains(t, got, "size=4096k")

	if caps.RawBlock && caps.UserNamespace {
		hotAttachRawBlock(ctx, t, c)
	}

	require.NoError(t, c.DetachVolume(ctx, "/data"))
	got = shOut(ctx, t, c, "grep ' /data ' /proc/mounts || echo not-mounted")
	require.Contains(t, got, "not-mounted")
	requireDetached(t, img)
	require.Equal(t, "hot\n", readExt4(t, img, "/marker"))
	require.True(t, isNotFound(c.DetachVolume(ctx, "/data")), "detach twice")

	require.NoError(t, c.Kill(ctx, syscall.SIGKILL))
	_, err = c.Wait(ctx)
	require.NoError(t, err)
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	requireGone(t, h, rt, id, nil)
}

// hotAttachRawBlock hot attaches a raw block volume to the running c,
// writes it from inside, detaches it and checks that the device left the
// container and that the host reads what was written.
func hotAttachRawBlock(ctx context.Context, t *testing.T, c *runtime.Container) {
	t.Helper()
	raw := zeroImage(t, 4<<20)
	require.NoError(t, c.AttachVolume(ctx, volume.Spec{Source: raw, Destination: "/dev/xvdc", Mode: volume.ModeRawBlock}))
	got := shOut(ctx, t, c, "echo hot-raw | dd of=/dev/xvdc conv=fsync 2>/dev/null && echo raw-ok")
	require.Contains(t, got, "raw-ok")
	require.NoError(t, c.DetachVolume(ctx, "/dev/xvdc"))
	got = shOut(ctx, t, c, "test -e /dev/xvdc && echo still-there; dd if=/dev/xvdc count=1 2>/dev/null | head -c 7")
	require.NotContains(t, got, "hot-raw", "detached device still readable: %s", got)
	require.NotContains(t, got, "still-there", "the detached device's node is gone")
	requireDetached(t, raw)
	b, err := os.ReadFile(raw)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(b), "hot-raw\n"))
}

// plantScript plants, where testHotAttachPlanted's attaches will go, a
// FIFO, a directory, links and a file of the wrong kind.
var plantScript = strings.Join([]string{
	"mkfifo /dev/vdc",
	"mkdir /dev/vdd",
	"ln -s /etc/passwd /dev/vde",
	"mkdir -p /srv && mkfifo /srv/fifo && echo x > /srv/file",
	"ln -s /proc/1/root /srv/escape",
	"echo planted",
}, "; ")

// plantedAttempts are the attaches at what plantScript left: tmpfs ones,
// and raw block ones of raw where the backend has them.
func plantedAttempts(caps runtime.Capabilities, raw string) []volume.Spec {
	attempts := []volume.Spec{
		{Destination: "/srv/fifo", TmpfsSize: 1 << 20},
		{Destination: "/srv/file", TmpfsSize: 1 << 20},
		{Destination: "/srv/escape", TmpfsSize: 1 << 20},
		{Destination: "/srv/escape/x", TmpfsSize: 1 << 20},
	}
	if caps.RawBlock && caps.UserNamespace {
		attempts = append(attempts,
			volume.Spec{Source: raw, Destination: "/dev/vdc", Mode: volume.ModeRawBlock},
			volume.Spec{Source: raw, Destination: "/dev/vdd", Mode: volume.ModeRawBlock},
			volume.Spec{Source: raw, Destination: "/dev/vde", Mode: volume.ModeRawBlock})
	}
	return attempts
}

// What a tenant plants where a hot attach will put its volume (a FIFO, a
// link, a file of the wrong kind) refuses the attach at once with
// failed-precondition, never wedges it nor the container's deletion, and
// leaves nothing attached.
func testHotAttachPlanted(t *testing.T, h Harness) {
	ctx, rt, c, id := startForHotAttach(t, h, "planted")
	caps := rt.Capabilities()
	require.Contains(t, shOut(ctx, t, c, plantScript), "planted")

	raw := zeroImage(t, 4<<20)
	for _, v := range plantedAttempts(caps, raw) {
		start := time.Now()
		err := c.AttachVolume(ctx, v)
		require.Truef(t, isFailedPrecondition(err), "attach at planted %s: %v (after %s)", v.Destination, err, time.Since(start))
		requireDetached(t, raw)
		vols, err := c.Volumes(ctx)
		require.NoError(t, err)
		require.Empty(t, vols, "a refused attach is not recorded")
	}
	// The tenant's files are as it left them.
	out, code := execSh(ctx, t, c, "test -p /dev/vdc && test -d /dev/vdd && test -L /dev/vde && test -p /srv/fifo && test -L /srv/escape && head -c 4 /etc/passwd")
	require.Equal(t, 0, code, "planted files changed: %s", out)
	require.Equal(t, "root", out)
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{Force: true}))
	requireDetached(t, raw)
	requireGone(t, h, rt, id, nil)
}

// A tenant that moves a hot-attached volume (renaming a directory above
// it) and puts a link where it was cannot make a detach miss it nor hit
// something else: the detach takes out the volume's own mount wherever it
// went, and its device leaves the devices cgroup, before the host releases
// the loop device (which another attach could then get); the container's
// read-only /proc/sys stays read-only.
func testHotDetachMovedVolume(t *testing.T, h Harness) {
	ctx, rt, c, id := startForHotAttach(t, h, "moved")
	caps := rt.Capabilities()

	require.NoError(t, c.AttachVolume(ctx, volume.Spec{Destination: "/vol/sys", TmpfsSize: 1 << 20}))
	shOut(ctx, t, c, "mv /vol /vol2 && ln -s /proc /vol")
	require.NoError(t, c.DetachVolume(ctx, "/vol/sys"))
	got := shOut(ctx, t, c, "grep -E ' /proc/sys | /vol2/sys ' /proc/mounts")
	require.Contains(t, got, " /proc/sys proc ro,", "/proc/sys is still read-only: %s", got)
	require.NotContains(t, got, "/vol2/sys", "the moved volume was detached: %s", got)

	if caps.RawBlock && caps.UserNamespace {
		img := zeroImage(t, 4<<20)
		require.NoError(t, os.WriteFile(img, []byte("tenant-disk"), 0o600))
		require.NoError(t, os.Truncate(img, 4<<20))
		require.NoError(t, c.AttachVolume(ctx, volume.Spec{Source: img, Destination: "/data/vdb", Mode: volume.ModeRawBlock}))
		require.Contains(t, shOut(ctx, t, c, "head -c 11 /data/vdb"), "tenant-disk")
		shOut(ctx, t, c, "mv /data /data2 && mkdir /data")
		require.NoError(t, c.DetachVolume(ctx, "/data/vdb"))
		requireDetached(t, img)
		got := shOut(ctx, t, c, "test -e /data2/vdb && echo node-kept; head -c 11 /data2/vdb 2>&1; echo")
		require.NotContains(t, got, "node-kept", "the moved device's mount went: %s", got)
		require.NotContains(t, got, "tenant-disk")
	}
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{Force: true}))
	requireGone(t, h, rt, id, nil)
}

// A detach finds a volume's mount however the tenant's view of it differs
// from the destination berth was given: through a link the root filesystem
// holds where the destination is (the engine mounted the volume where it
// led), or with the container's init in a chroot of its own (its mount
// table no longer shows the volume).
func testDetachUnderTenantViews(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	caps := rt.Capabilities()
	if !caps.HotAttach || !caps.Exec {
		t.Skip("backend has no hot attach")
	}
	cfg := h.Config(t, "/bin/sh", "-c", "mkdir -p /jail && cp -a /bin /jail/ && exec chroot /jail /bin/sleep 1000")
	if cfg.Spec.Root == nil || cfg.Spec.Root.Path == "" {
		t.Skip("the harness gives no root filesystem directory to plant a link in")
	}
	require.NoError(t, os.MkdirAll(filepath.Join(cfg.Spec.Root.Path, "srv"), 0o755))
	require.NoError(t, os.Symlink("/srv", filepath.Join(cfg.Spec.Root.Path, "data")))
	cfg.UserNamespace = caps.UserNamespace
	img := ext4Image(t)
	cfg.Volumes = []volume.Spec{{Source: img, Destination: "/data"}}
	id := NewID("views")
	c := create(t, rt, id, cfg)
	require.NoError(t, c.Start(ctx))
	require.Contains(t, shOut(ctx, t, c, "grep ' /srv ' /proc/mounts"), " ext4 ", "the volume is where the link led")
	require.NoError(t, c.AttachVolume(ctx, volume.Spec{Destination: "/vol", TmpfsSize: 1 << 20}))

	require.NoError(t, c.DetachVolume(ctx, "/data"))
	require.NoError(t, c.DetachVolume(ctx, "/vol"))
	got := shOut(ctx, t, c, "grep -E ' /srv | /vol ' /proc/mounts; echo done")
	require.Equal(t, "done\n", got, "the detached volumes are gone from the container")
	requireDetached(t, img)
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{Force: true}))
	requireGone(t, h, rt, id, nil)
}

// startForHotAttach skips on a backend without hot attach and exec, and
// starts a sleeping container (in a user namespace where the backend has
// them) for a hot-attach test.
func startForHotAttach(t *testing.T, h Harness, prefix string) (context.Context, *runtime.Runtime, *runtime.Container, string) {
	t.Helper()
	ctx := testContext(t)
	rt := h.Open(t)
	caps := rt.Capabilities()
	if !caps.HotAttach || !caps.Exec {
		t.Skip("backend has no hot attach")
	}
	cfg := h.Config(t, "/bin/sleep", "1000")
	cfg.UserNamespace = caps.UserNamespace
	id := NewID(prefix)
	c := create(t, rt, id, cfg)
	require.NoError(t, c.Start(ctx))
	return ctx, rt, c, id
}
