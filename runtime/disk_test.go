package runtime

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/runtime/driver"
	"github.com/berthrun/berth/volume"
)

// fakeDisks is a backend with root disks: ext4 made by mkfs -d, copied
// without freezing (nothing runs on them).
type fakeDisks struct {
	*fakeDriver
}

func (f *fakeDisks) Capabilities() driver.Capabilities {
	return driver.Capabilities{RootDisk: true, Snapshot: true}
}

func (f *fakeDisks) MakeDisk(ctx context.Context, path string, size int64, tree string) (*driver.MadeDisk, error) {
	if size == 0 {
		size = 32 << 20
	}
	file, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	err = errors.Join(file.Truncate(size), file.Close())
	if err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-d", tree, path).CombinedOutput(); err != nil {
		return nil, errors.New(string(out))
	}
	return &driver.MadeDisk{Modes: []driver.PathMode{{Path: "tmp", Mode: os.ModeDir | os.ModeSticky | 0o777}}}, nil
}

func (f *fakeDisks) SnapshotDisk(ctx context.Context, id, dst string) error {
	f.mu.Lock()
	req, ok := f.created[id]
	f.mu.Unlock()
	if !ok {
		return errdefs.ErrNotFound
	}
	return fsutil.CopySparse(req.RootDiskImage, dst)
}

func (f *fakeDisks) Delete(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.created, id)
	return nil
}

func (f *fakeDisks) req(id string) *driver.CreateRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.created[id]
}

func newDiskRuntime(t *testing.T, p volume.Policy) (*Runtime, *fakeDisks, string) {
	fixture.RequireRoot(t)
	dir := t.TempDir()
	f := &fakeDisks{&fakeDriver{created: map[string]*driver.CreateRequest{}}}
	rt, err := New(f, WithStateDir(dir), WithVolumePolicy(p))
	require.NoError(t, err)
	// Whatever a failing test left attached goes with it.
	t.Cleanup(func() {
		ents, _ := os.ReadDir(filepath.Join(dir, "disks"))
		for _, e := range ents {
			_ = rt.volumes.DetachAll(context.Background(), e.Name())
		}
	})
	return rt, f, dir
}

func diskTree(t *testing.T) string {
	tree := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(tree, "hello"), []byte("from the tree\n"), 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(tree, "tmp"), 0o755))
	return tree
}

// diskHeld lists what the host still holds for the disk under dir/disks/owner:
// the directory, records, loop devices backed by the image and their mounts.
func diskHeld(t *testing.T, dir, owner string) []string {
	t.Helper()
	var held []string
	if _, err := os.Lstat(filepath.Join(dir, "disks", owner)); err == nil {
		held = append(held, "disk directory")
	}
	recs, _ := filepath.Glob(filepath.Join(dir, "volumes", "records", owner+".*"))
	held = append(held, recs...)
	img := filepath.Join(dir, "disks", owner, diskFile)
	ents, _ := os.ReadDir("/sys/block")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "loop", "backing_file"))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), img) {
			held = append(held, "/dev/"+e.Name())
			ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter("/dev/" + e.Name()))
			require.NoError(t, err)
			for _, m := range ms {
				held = append(held, "mount "+m.Mountpoint)
			}
		}
	}
	return held
}

// The runtime makes the disk, attaches it through its manager and hands
// the backend the mounted path; a failed create and Delete take it back.
func TestRootDiskLifecycle(t *testing.T) {
	rt, f, dir := newDiskRuntime(t, volume.DefaultPolicy())
	ctx := context.Background()
	cfg := &Config{Spec: DefaultSpec(diskTree(t), "/bin/true"), Volumes: []volume.Spec{{Destination: "/scratch", TmpfsSize: 1 << 20}}}

	f.createErr = errors.New("engine said no")
	_, err := rt.Create(ctx, "c1", cfg)
	require.Error(t, err)
	require.Empty(t, diskHeld(t, dir, "c1"), "a failed create leaves no disk")

	f.createErr = nil
	c, err := rt.Create(ctx, "c1", cfg)
	require.NoError(t, err)
	req := f.req("c1")
	require.Equal(t, filepath.Join(dir, "disks", "c1", diskFile), req.RootDiskImage)
	b, err := os.ReadFile(filepath.Join(req.Spec.Root.Path, "hello"))
	require.NoError(t, err, "the backend gets the mounted disk")
	require.Equal(t, "from the tree\n", string(b))
	fi, err := os.Stat(filepath.Join(req.Spec.Root.Path, "tmp"))
	require.NoError(t, err)
	require.Equal(t, os.ModeDir|os.ModeSticky|0o777, fi.Mode(), "the maker's modes are set")
	require.NotEqual(t, req.Spec.Root.Path, cfg.Spec.Root.Path, "the caller's spec is left alone")
	vols, err := c.Volumes(ctx)
	require.NoError(t, err)
	require.Len(t, vols, 1, "the root disk is no volume")
	require.Equal(t, "/scratch", vols[0].Destination)

	var archive bytes.Buffer
	require.NoError(t, c.Snapshot(ctx, &archive))
	require.Equal(t, "from the tree\n", tarFile(t, &archive, "hello"))
	snaps, _ := filepath.Glob(filepath.Join(dir, "disks", snapshotPrefix+"*"))
	require.Empty(t, snaps, "the snapshot's copy is gone")
	recs, _ := filepath.Glob(filepath.Join(dir, "volumes", "records", snapshotPrefix+"*"))
	require.Empty(t, recs)

	require.NoError(t, c.Delete(ctx, DeleteOptions{}))
	require.Empty(t, diskHeld(t, dir, "c1"))
}

func tarFile(t *testing.T, r io.Reader, name string) string {
	t.Helper()
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		require.NoError(t, err, "no %s in the archive", name)
		if strings.TrimPrefix(hdr.Name, "./") == name {
			b, err := io.ReadAll(tr)
			require.NoError(t, err)
			return string(b)
		}
	}
}

// A disk a crashed create or snapshot left (a directory, an image attached
// through the manager, no container) is removed by the next New; one whose
// owner lock is held (a create in progress) and a live container's stay.
func TestRootDiskRecovery(t *testing.T) {
	rt, f, dir := newDiskRuntime(t, volume.DefaultPolicy())
	ctx := context.Background()
	tree := diskTree(t)
	crashed := func(owner string, ro bool) {
		t.Helper()
		require.NoError(t, os.Mkdir(filepath.Join(dir, "disks", owner), 0o700))
		img := filepath.Join(dir, "disks", owner, diskFile)
		_, err := f.MakeDisk(ctx, img, 0, tree)
		require.NoError(t, err)
		_, err = rt.volumes.Attach(ctx, owner, volume.Spec{Source: img, Destination: rootDst, Kind: volume.KindImage, ReadOnly: ro}, volume.AttachOptions{})
		require.NoError(t, err)
		require.NotEmpty(t, diskHeld(t, dir, owner))
	}
	crashed("dead", false)
	crashed(snapshotPrefix+"live.0badcafe", true)
	crashed("busy", false)
	lock, err := rt.volumes.LockOwner("busy")
	require.NoError(t, err)
	unlock := sync.OnceFunc(lock)
	t.Cleanup(unlock)
	live, err := rt.Create(ctx, "live", &Config{Spec: DefaultSpec(tree, "/bin/true")})
	require.NoError(t, err)
	liveHeld := diskHeld(t, dir, "live")

	_, err = New(f, WithStateDir(dir))
	require.NoError(t, err)
	require.Empty(t, diskHeld(t, dir, "dead"), "the crashed create's disk is gone")
	require.Empty(t, diskHeld(t, dir, snapshotPrefix+"live.0badcafe"), "the crashed snapshot's copy is gone")
	require.NotEmpty(t, diskHeld(t, dir, "busy"), "a create in progress keeps its disk")
	require.Equal(t, liveHeld, diskHeld(t, dir, "live"), "a container keeps its disk")

	unlock()
	_, err = New(f, WithStateDir(dir))
	require.NoError(t, err)
	require.Empty(t, diskHeld(t, dir, "busy"), "once its create is over, it was a leftover")
	require.NoError(t, live.Delete(ctx, DeleteOptions{}))
	require.Empty(t, diskHeld(t, dir, "live"))
}

// A root disk goes through the runtime's policy, given once: a refused
// filesystem leaves nothing, and fsck runs on adopted disks.
func TestRootDiskPolicy(t *testing.T) {
	ctx := context.Background()
	rt, _, dir := newDiskRuntime(t, volume.Policy{Filesystems: []string{"xfs", "tmpfs"}})
	_, err := rt.Create(ctx, "refused", &Config{Spec: DefaultSpec(diskTree(t), "/bin/true")})
	require.Truef(t, errdefs.IsInvalidArgument(err), "%v", err)
	require.Contains(t, err.Error(), `"ext4" is not allowed`)
	require.Empty(t, diskHeld(t, dir, "refused"))

	p := volume.DefaultPolicy()
	p.Fsck = true
	rt, f, dir := newDiskRuntime(t, p)
	disk := filepath.Join(t.TempDir(), "adopted.img")
	_, err = f.MakeDisk(ctx, disk, 0, diskTree(t))
	require.NoError(t, err)
	// Zero the first block group descriptors: the superblock still says
	// ext4, the checker finds the filesystem broken.
	file, err := os.OpenFile(disk, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = file.WriteAt(make([]byte, 4096), 4096)
	require.NoError(t, errors.Join(err, file.Close()))
	spec := DefaultSpec("", "/bin/true")
	_, err = rt.Create(ctx, "corrupt", &Config{Spec: spec, RootDisk: disk})
	require.Truef(t, errdefs.IsInvalidArgument(err), "%v", err)
	require.Contains(t, err.Error(), "check failed")
	require.Empty(t, diskHeld(t, dir, "corrupt"))
	_, err = os.Stat(disk)
	require.NoError(t, err, "the refused create kept the caller's disk")
}
