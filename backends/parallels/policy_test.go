package parallels_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/backends/parallels"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/runtimetest"
	"github.com/berthrun/berth/volume"
)

// openWithPolicy opens the engine and a runtime over it on a fresh root,
// with p given once, to the runtime.
func openWithPolicy(t *testing.T, p volume.Policy) (*runtime.Runtime, string) {
	root := filepath.Join(fixture.TempDir(t), "state")
	e, err := parallels.Open(root, parallels.WithDefaultDiskSize(64<<20))
	require.NoError(t, err)
	rt, err := runtime.New(e, runtime.WithStateDir(root), runtime.WithVolumePolicy(p))
	require.NoError(t, err)
	t.Cleanup(func() { rt.Close() })
	return rt, root
}

// mountsUnder lists the mount points under root.
func mountsUnder(t *testing.T, root string) []string {
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(root))
	require.NoError(t, err)
	var out []string
	for _, m := range ms {
		out = append(out, m.Mountpoint)
	}
	return out
}

// The runtime's policy reaches root disks: one that refuses ext4 refuses an
// ext4 root disk, and the refused create leaves nothing behind.
func TestRootDiskUnderRuntimePolicy(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rt, root := openWithPolicy(t, volume.Policy{Filesystems: []string{"xfs", "tmpfs"}})
	h := &harness{fs: "ext4"}
	id := runtimetest.NewID("refused")
	_, err := rt.Create(ctx, id, h.Config(t, "/bin/true"))
	require.Truef(t, errdefs.IsInvalidArgument(err), "%v", err)
	require.Contains(t, err.Error(), `"ext4" is not allowed`)
	require.Empty(t, leftovers(t, root, id))
	require.Empty(t, mountsUnder(t, root))
	recs, err := os.ReadDir(filepath.Join(root, "volumes", "records"))
	require.NoError(t, err)
	require.Empty(t, recs)
}

// Policy.Fsck, given only to the runtime, checks root disks: a corrupted
// adopted disk is refused (and stays the caller's), sound disks pass.
func TestRootDiskFsckFromRuntimePolicy(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := volume.DefaultPolicy()
	p.Fsck = true
	rt, root := openWithPolicy(t, p)
	h := &harness{fs: "ext4"}
	id := runtimetest.NewID("checked")
	require.Contains(t, runOut(t, ctx, rt, id, h.Config(t, "/bin/echo", "sound")), "sound", "a new disk passes the check")
	c, err := rt.Get(ctx, id)
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "exp")
	require.NoError(t, c.Export(ctx, dir))
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	disk := filepath.Join(dir, "disk.img")

	// Zero the first block group descriptors: the superblock still says
	// ext4, the checker finds the filesystem broken.
	f, err := os.OpenFile(disk, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(make([]byte, 4096), 4096)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	bad := runtimetest.NewID("corrupt")
	_, err = rt.Import(ctx, bad, dir, runtime.ImportOptions{})
	require.Truef(t, errdefs.IsInvalidArgument(err), "%v", err)
	require.Contains(t, err.Error(), "check failed")
	require.Empty(t, leftovers(t, root, bad))
	require.Empty(t, mountsUnder(t, root))
	_, err = os.Stat(disk)
	require.NoError(t, err, "the refused create kept the caller's disk")
}
