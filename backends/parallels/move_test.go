package parallels_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/backends/parallels"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/runtimetest"
)

func runOut(t *testing.T, ctx context.Context, rt *runtime.Runtime, id string, cfg *runtime.Config) string {
	t.Helper()
	var out fixture.SyncBuffer
	cfg.IO = runtime.IO{Stdout: &out, Stderr: &out}
	c, err := rt.Create(ctx, id, cfg)
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx))
	_, err = c.Wait(ctx)
	require.NoError(t, err)
	return out.String()
}

// Cold move: a stopped container's disk and config go to another root,
// where the container starts again with its data.
func TestColdMove(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := &harness{fs: "ext4"}
	src, dst := h.Open(t), h.Open(t)
	id := runtimetest.NewID("move")
	cfg := h.Config(t, "/bin/sh", "-c", "cat /data-file 2>/dev/null; echo moved-data > /data-file; cat /proc/self/uid_map")
	cfg.UserNamespace = true
	first := runOut(t, ctx, src, id, cfg)
	require.NotContains(t, first, "moved-data")
	c, err := src.Get(ctx, id)
	require.NoError(t, err)

	dir := filepath.Join(t.TempDir(), "moving")
	require.NoError(t, c.Export(ctx, dir))
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	require.Empty(t, leftovers(t, stateRoot(t, src), id))

	var out fixture.SyncBuffer
	c2, err := dst.Import(ctx, id, dir, runtime.ImportOptions{IO: runtime.IO{Stdout: &out, Stderr: &out}})
	require.NoError(t, err)
	info, err := c2.Info(ctx)
	require.NoError(t, err)
	require.True(t, info.Spec.Linux.UIDMappings != nil, "the importer gave the container a user namespace of its own")
	require.NoError(t, c2.Start(ctx))
	_, err = c2.Wait(ctx)
	require.NoError(t, err)
	require.Contains(t, out.String(), "moved-data\n", "the data came along")
	require.Contains(t, first, "0 ")
	require.NoError(t, c2.Delete(ctx, runtime.DeleteOptions{}))
	require.Empty(t, leftovers(t, stateRoot(t, dst), id))

	// A running container cannot be moved.
	c3, err := src.Create(ctx, runtimetest.NewID("busy"), h.Config(t, "/bin/sleep", "100"))
	require.NoError(t, err)
	require.NoError(t, c3.Start(ctx))
	err = c3.Export(ctx, filepath.Join(t.TempDir(), "x"))
	require.True(t, errdefs.IsFailedPrecondition(err), "%v", err)
	require.NoError(t, c3.Delete(ctx, runtime.DeleteOptions{Force: true}))
}

// A disk snapshot of a running container starts as a new container holding
// what was written before it.
func TestSnapshotDiskStartsElsewhere(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := &harness{fs: "ext4"}
	rt := h.Open(t)
	var out fixture.SyncBuffer
	cfg := h.Config(t, "/bin/sh", "-c", "echo before-snapshot > /state; echo ready; sleep 1000")
	cfg.IO = runtime.IO{Stdout: &out, Stderr: &out}
	c, err := rt.Create(ctx, runtimetest.NewID("live"), cfg)
	require.NoError(t, err)
	defer c.Delete(context.Background(), runtime.DeleteOptions{Force: true})
	require.NoError(t, c.Start(ctx))
	require.Eventually(t, func() bool { return out.String() == "ready\n" }, time.Minute, 20*time.Millisecond)

	var disk *parallels.Disk
	require.True(t, c.As(&disk))
	img, err := disk.Image(ctx)
	require.NoError(t, err)
	require.FileExists(t, img)
	snap := filepath.Join(t.TempDir(), "snap.img")
	require.NoError(t, disk.Snapshot(ctx, snap))
	st, err := c.State(ctx)
	require.NoError(t, err)
	require.Equal(t, runtime.StatusRunning, st, "thawed after the snapshot")

	other := h.Open(t)
	spec := runtime.DefaultSpec("", "/bin/cat", "/state")
	spec.Root = nil
	id := runtimetest.NewID("fromsnap")
	got := runOut(t, ctx, other, id, &runtime.Config{Spec: spec, RootDisk: snap})
	require.Equal(t, "before-snapshot\n", got)
	c2, err := other.Get(ctx, id)
	require.NoError(t, err)
	require.NoError(t, c2.Delete(ctx, runtime.DeleteOptions{}))
	require.Empty(t, leftovers(t, stateRoot(t, other), id))
}

// A create that fails after adopting a root disk leaves the caller's file
// as it was; one that succeeds takes it.
func TestRootDiskKeptOnFailure(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h := &harness{fs: "ext4"}
	rt := h.Open(t)
	id := runtimetest.NewID("src")
	c, err := rt.Create(ctx, id, h.Config(t, "/bin/true"))
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "exp")
	require.NoError(t, c.Export(ctx, dir))
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	var exp struct{ Spec *specs.Spec }
	b, err := os.ReadFile(filepath.Join(dir, runtime.ExportConfigFile))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &exp))
	disk := filepath.Join(dir, "disk.img")

	bad := *exp.Spec
	bad.Process = &specs.Process{Args: []string{"/bin/true"}, Cwd: "/", Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_TYPO", Hard: 1, Soft: 1}}}
	_, err = rt.Create(ctx, runtimetest.NewID("bad"), &runtime.Config{Spec: &bad, RootDisk: disk})
	require.Error(t, err)
	_, err = os.Stat(disk)
	require.NoError(t, err, "the refused create kept the caller's disk")

	id2 := runtimetest.NewID("good")
	c2, err := rt.Create(ctx, id2, &runtime.Config{Spec: exp.Spec, RootDisk: disk})
	require.NoError(t, err)
	_, err = os.Stat(disk)
	require.True(t, os.IsNotExist(err), "the container took the disk")
	require.NoError(t, c2.Delete(ctx, runtime.DeleteOptions{}))
	require.Empty(t, leftovers(t, stateRoot(t, rt), id2))
}
