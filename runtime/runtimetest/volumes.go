package runtimetest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/internal/loop"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/volume"
)

// ext4Image makes a small ext4 image file for volume tests.
func ext4Image(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "vol.img")
	f, err := os.Create(p)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(32<<20))
	require.NoError(t, f.Close())
	out, err := exec.Command("mkfs.ext4", "-q", "-F", p).CombinedOutput()
	require.NoError(t, err, "mkfs.ext4: %s", out)
	return p
}

// readExt4 reads a file from an ext4 image without mounting it.
func readExt4(t *testing.T, img, path string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+path, img).Output()
	require.NoError(t, err)
	return string(out)
}

// requireDetached checks the host holds nothing for the image any more: no
// mount of its loop device and no loop device backed by it.
func requireDetached(t *testing.T, img string) {
	t.Helper()
	bound, err := os.ReadDir("/sys/block")
	require.NoError(t, err)
	for _, e := range bound {
		b, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "loop", "backing_file"))
		if err == nil {
			require.NotEqual(t, img, strings.TrimSpace(string(b)), "%s still backs /dev/%s", img, e.Name())
		}
	}
}

// volumeLine returns the /proc/mounts line for dst as the container sees it.
func mountsLine(out, dst string) string {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 3 && f[1] == dst {
			return l
		}
	}
	return ""
}

func testVolumeHostMount(t *testing.T, h Harness) {
	for _, userns := range []bool{false, true} {
		name := "plain"
		if userns {
			name = "userns"
		}
		t.Run(name, func(t *testing.T) {
			ctx := testContext(t)
			rt := h.Open(t)
			if userns && !rt.Capabilities().UserNamespace {
				t.Skip("backend has no user namespaces")
			}
			img := ext4Image(t)
			out := newBuffer()
			cfg := h.Config(t, "/bin/sh", "-c", "grep ' /data ' /proc/mounts; echo written > /data/marker && echo wrote")
			cfg.UserNamespace = userns
			cfg.Volumes = []volume.Spec{{Source: img, Destination: "/data"}}
			cfg.IO = runtime.IO{Stdout: out, Stderr: out}
			id := NewID("vol")
			c := create(t, rt, id, cfg)
			vols, err := c.Volumes(ctx)
			require.NoError(t, err)
			require.Len(t, vols, 1)
			require.NoError(t, c.Start(ctx))
			es, err := c.Wait(ctx)
			require.NoError(t, err)
			require.Equal(t, 0, es.Code, "output: %s", out.String())
			line := mountsLine(out.String(), "/data")
			require.NotEmpty(t, line, "the volume is mounted at its destination: %s", out.String())
			require.Contains(t, line, " ext4 ")
			require.Contains(t, line, "nosuid")
			require.Contains(t, line, "nodev")
			require.Contains(t, out.String(), "wrote", "root in the container writes the volume")
			require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
			requireDetached(t, img)
			require.Equal(t, "written\n", readExt4(t, img, "/marker"))
			requireGone(t, h, rt, id, nil)
		})
	}
}

func testVolumeRefused(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	img := filepath.Join(t.TempDir(), "vfat.img")
	f, err := os.Create(img)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(16<<20))
	require.NoError(t, f.Close())
	out, err := exec.Command("mkfs.vfat", img).CombinedOutput()
	require.NoError(t, err, "%s", out)
	// Other tests mount and unmount concurrently: look only for vfat.
	vfat := mountinfo.FSTypeFilter("vfat")
	before, err := mountinfo.GetMounts(vfat)
	require.NoError(t, err)
	cfg := h.Config(t, "/bin/true")
	cfg.Volumes = []volume.Spec{{Source: img, Destination: "/data"}}
	id := NewID("volbad")
	_, err = rt.Create(ctx, id, cfg)
	require.Truef(t, isInvalidArgument(err), "vfat is off the default whitelist: %v", err)
	require.Contains(t, err.Error(), "vfat")
	after, err := mountinfo.GetMounts(vfat)
	require.NoError(t, err)
	require.Equal(t, len(before), len(after), "vfat was mounted")
	requireDetached(t, img)
	_, err = rt.Get(ctx, id)
	require.True(t, isNotFound(err), "no container was created")

	// An ext4 whose superblock claims more than the file holds is refused
	// by the probe, before the kernel sees it.
	short := ext4Image(t)
	require.NoError(t, os.Truncate(short, 16<<20))
	cfg = h.Config(t, "/bin/true")
	cfg.Volumes = []volume.Spec{{Source: short, Destination: "/data"}}
	id = NewID("volshort")
	_, err = rt.Create(ctx, id, cfg)
	require.Truef(t, isInvalidArgument(err), "truncated ext4: %v", err)
	require.ErrorIs(t, err, volume.ErrGeometry)
	requireDetached(t, short)
	_, err = rt.Get(ctx, id)
	require.True(t, isNotFound(err), "no container was created")
}

func zeroImage(t *testing.T, size int64) string {
	p := filepath.Join(t.TempDir(), "raw.img")
	f, err := os.Create(p)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(size))
	require.NoError(t, f.Close())
	return p
}

func testVolumeRawBlock(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	caps := rt.Capabilities()
	img := zeroImage(t, 8<<20)
	raw := []volume.Spec{{Source: img, Destination: "/dev/xvdb", Mode: volume.ModeRawBlock}}
	if !caps.RawBlock {
		cfg := h.Config(t, "/bin/true")
		cfg.Volumes = raw
		_, err := rt.Create(ctx, NewID("noraw"), cfg)
		require.Truef(t, isNotImplemented(err), "raw block on a backend without it: %v", err)
		return
	}
	// Without a user namespace root could mount it: refused.
	cfg := h.Config(t, "/bin/true")
	cfg.Volumes = raw
	_, err := rt.Create(ctx, NewID("rawnouserns"), cfg)
	require.Truef(t, isFailedPrecondition(err), "raw block without a user namespace: %v", err)
	requireDetached(t, img)
	if !caps.UserNamespace {
		return
	}
	out := newBuffer()
	cfg = h.Config(t, "/bin/sh", "-c", strings.Join([]string{
		"echo berth-raw-marker | dd of=/dev/xvdb conv=fsync 2>/dev/null && echo write-ok",
		"head -c 16 /dev/xvdb | grep -q berth-raw-marker && echo read-ok",
		"mkdir -p /mnt/x; mount /dev/xvdb /mnt/x 2>/dev/null && echo mount-allowed",
		"mknod /dev/other b 7 0 2>/dev/null && echo mknod-allowed",
		"true",
	}, "; "))
	cfg.UserNamespace = true
	cfg.Volumes = raw
	cfg.IO = runtime.IO{Stdout: out, Stderr: out}
	id := NewID("raw")
	c := create(t, rt, id, cfg)
	require.NoError(t, c.Start(ctx))
	_, err = c.Wait(ctx)
	require.NoError(t, err)
	require.Contains(t, out.String(), "write-ok")
	require.Contains(t, out.String(), "read-ok")
	require.NotContains(t, out.String(), "mount-allowed", "the kernel refuses mounts in a user namespace")
	require.NotContains(t, out.String(), "mknod-allowed")
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	requireDetached(t, img)
	b, err := os.ReadFile(img)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(b), "berth-raw-marker\n"), "the host reads the container's marker")
	requireGone(t, h, rt, id, nil)
}

// dirtyImage makes a filesystem image of type fs that a mount would write
// to even read-only, were the kernel allowed: an ext2/3/4 with an orphan
// inode list (the mount's cleanup frees it), an xfs whose log was left
// dirty by a shutdown (recovery replays it).
func dirtyImage(t *testing.T, fs string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), fs+".img")
	size := int64(32 << 20)
	if fs == "xfs" {
		size = 320 << 20
	}
	f, err := os.Create(p)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(size))
	require.NoError(t, f.Close())
	run := func(name string, args ...string) {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		require.NoError(t, err, "%s %v: %s", name, args, out)
	}
	if fs == "xfs" {
		run("mkfs.xfs", "-q", "-f", p)
		mnt := t.TempDir()
		run("mount", "-o", "loop", p, mnt)
		run("sh", "-c", "echo data > "+mnt+"/file && sync && echo more > "+mnt+"/file2")
		run("xfs_io", "-x", "-c", "shutdown", mnt)
		run("umount", "-d", mnt)
		return p
	}
	run("mkfs."+fs, "-q", "-F", p)
	orphan := filepath.Join(t.TempDir(), "orphan")
	require.NoError(t, os.WriteFile(orphan, []byte("an orphan's data\n"), 0o644))
	run("debugfs", "-w", "-R", "write "+orphan+" orphan", p)
	out, err := exec.Command("debugfs", "-R", "stat orphan", p).Output()
	require.NoError(t, err, "%s", out)
	var ino int
	_, err = fmt.Sscanf(strings.TrimSpace(string(out)), "Inode: %d", &ino)
	require.NoError(t, err, "%s", out)
	run("debugfs", "-w", "-R", fmt.Sprintf("sif <%d> links_count 0", ino), p)
	run("debugfs", "-w", "-R", "unlink orphan", p)
	run("debugfs", "-w", "-R", fmt.Sprintf("ssv last_orphan %d", ino), p)
	return p
}

func sha(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// A read-only volume's bytes are the same after attach, use and detach,
// for every filesystem of the default whitelist, whether the source is a
// block device or an image file: the kernel must not clean up orphans,
// replay a journal or touch the superblock of a volume the caller gave
// read-only.
func testVolumeReadOnlyUnchanged(t *testing.T, h Harness) {
	for _, fs := range []string{"ext2", "ext3", "ext4", "xfs"} {
		for _, kind := range []volume.Kind{volume.KindBlock, volume.KindImage} {
			t.Run(fs+"/"+string(kind), func(t *testing.T) {
				ctx := testContext(t)
				rt := h.Open(t)
				img := dirtyImage(t, fs)
				want := sha(t, img)
				src, detach := img, func() {}
				if kind == volume.KindBlock {
					// The block device os-brick would leave: a loop
					// device the host attached, not berth, that no
					// process holds open.
					out, err := exec.Command("losetup", "--find", "--show", img).Output()
					require.NoError(t, err)
					src = strings.TrimSpace(string(out))
					var once sync.Once
					detach = func() {
						once.Do(func() { require.NoError(t, exec.Command("losetup", "-d", src).Run()) })
					}
					t.Cleanup(detach)
				}
				out := newBuffer()
				cfg := h.Config(t, "/bin/sh", "-c", "ls -la /data >/dev/null && cat /data/* >/dev/null 2>&1; grep ' /data ' /proc/mounts")
				cfg.Volumes = []volume.Spec{{Source: src, Destination: "/data", ReadOnly: true}}
				cfg.IO = runtime.IO{Stdout: out, Stderr: out}
				id := NewID("rovol")
				c := create(t, rt, id, cfg)
				require.NoError(t, c.Start(ctx))
				_, err := c.Wait(ctx)
				require.NoError(t, err)
				require.Contains(t, mountsLine(out.String(), "/data"), " ro,", "mounted read-only: %s", out)
				require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
				requireDetached(t, src) // berth's read-only loop over the device
				detach()
				// The kernel drops berth's loop device's hold on the
				// device a moment after freeing it (a deferred close):
				// the host's own LOOP_CLR_FD then completes with it.
				require.NoError(t, waitLoopGone(ctx, img))
				requireDetached(t, img)
				require.Equal(t, want, sha(t, img), "the read-only %s volume was written", fs)
				requireGone(t, h, rt, id, nil)
			})
		}
	}
}

// waitLoopGone waits, within ctx, until no loop device is backed by img.
func waitLoopGone(ctx context.Context, img string) error {
	for {
		bound, err := loop.Backing()
		if err != nil {
			return err
		}
		if !slices.Contains(slices.Collect(maps.Values(bound)), img) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s still backs a loop device: %w", img, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
