package loop

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fixture"
)

// attached binds a new 16 MiB file (an ext4 filesystem with mkfs) to an
// autoclear loop device, and returns the device and the file's identity
// as the kernel holds it.
func attached(t *testing.T, mkfs bool) (d *Device, dev, ino uint64) {
	t.Helper()
	fixture.RequireRoot(t)
	p := filepath.Join(t.TempDir(), "f.img")
	f, err := os.Create(p)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(16<<20))
	require.NoError(t, f.Close())
	if mkfs {
		_, err := exec.LookPath("mkfs.ext4")
		fixture.Require(t, err == nil, "mkfs.ext4 is not installed (scripts/setup.sh installs it)")
		out, err := exec.Command("mkfs.ext4", "-q", "-F", p).CombinedOutput()
		require.NoError(t, err, "%s", out)
	}
	f, err = os.OpenFile(p, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	d, err = Attach(f, Options{Autoclear: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Detach() })
	dev, ino, err = BackingID(d.Path)
	require.NoError(t, err)
	return d, dev, ino
}

// Another opener keeps the device past Free; its close frees it, and the
// watcher reports that.
func TestFreeWaitsForTheLastOpener(t *testing.T) {
	d, dev, ino := attached(t, false)
	other, err := os.Open(d.Path)
	require.NoError(t, err)
	require.NoError(t, d.Close())
	w, err := Watch()
	require.NoError(t, err)
	defer w.Close()

	free, err := Free(d.Path, dev, ino)
	require.NoError(t, err)
	require.False(t, free, "another process has it open")
	require.NotEmpty(t, Holders(d.Path), "the opener is named")
	require.Contains(t, Holders(d.Path)[0], fmt.Sprintf("pid %d ", os.Getpid()))

	require.NoError(t, other.Close())
	for !free {
		require.NoError(t, w.Wait(context.Background(), d.Path))
		free, err = Free(d.Path, dev, ino)
		require.NoError(t, err)
	}
	require.False(t, bound(d.Path))
}

// A mounted filesystem claims the device: Free does not clear it under the
// mount, and the device is free once the filesystem is gone.
func TestFreeWaitsForTheFilesystem(t *testing.T) {
	d, dev, ino := attached(t, true)
	mp := t.TempDir()
	require.NoError(t, unix.Mount(d.Path, mp, "ext4", 0, ""))
	t.Cleanup(func() { _ = unix.Unmount(mp, unix.MNT_DETACH) })
	require.NoError(t, d.Close())
	w, err := Watch()
	require.NoError(t, err)
	defer w.Close()

	free, err := Free(d.Path, dev, ino)
	require.NoError(t, err)
	require.False(t, free, "mounted")
	require.True(t, bound(d.Path))

	require.NoError(t, unix.Unmount(mp, 0))
	for !free {
		require.NoError(t, w.Wait(context.Background(), d.Path))
		free, err = Free(d.Path, dev, ino)
		require.NoError(t, err)
	}
	require.False(t, bound(d.Path))
}

// A device bound to another file is not the caller's: Free leaves it.
func TestFreeLeavesAnotherFilesDevice(t *testing.T) {
	d, dev, ino := attached(t, false)
	free, err := Free(d.Path, dev, ino+1)
	require.NoError(t, err)
	require.True(t, free, "not bound to that file")
	require.True(t, bound(d.Path), "left bound")
}

// Wait ends with its context.
func TestWatchWaitEndsWithContext(t *testing.T) {
	fixture.RequireRoot(t)
	w, err := Watch()
	require.NoError(t, err)
	defer w.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, w.Wait(ctx, "/dev/loop-none"), context.Canceled)
}
