package parallels_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/backends/parallels"
	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/runtimetest"
	"github.com/berthrun/berth/volume"
)

// openBackend opens the named backend on root as berthctl does: the
// runtime's state, volumes and images under root.
func openBackend(t *testing.T, name, root string) (*runtime.Runtime, error) {
	var (
		e   interface{ Close() error }
		err error
	)
	var rt *runtime.Runtime
	var store *image.Store
	openStore := func() {
		// After the engine, which makes root traversable for
		// user-namespaced containers.
		store, err = image.Open(filepath.Join(root, "images"))
		require.NoError(t, err)
	}
	switch name {
	case "libcontainer":
		var lc *libcontainer.Runtime
		lc, err = libcontainer.Open(root)
		require.NoError(t, err)
		e = lc
		openStore()
		rt, err = runtime.New(lc, runtime.WithStateDir(root), runtime.WithImageStore(store))
	case "parallels":
		var p *parallels.Runtime
		p, err = parallels.Open(root, parallels.WithDefaultDiskSize(64<<20))
		require.NoError(t, err)
		e = p
		openStore()
		rt, err = runtime.New(p, runtime.WithStateDir(root), runtime.WithImageStore(store))
	}
	if err != nil {
		e.Close()
		return nil, err
	}
	t.Cleanup(func() { rt.Close() })
	return rt, nil
}

// A state root belongs to the backend that opened it first: the other one
// is refused with failed-precondition, in either order, and the first
// one's running container keeps its volumes. (Each backend knows only its
// own containers: the other would detach their volumes and drop their
// image holds as a crash's leftovers.)
func TestStateRootBelongsToOneBackend(t *testing.T) {
	fixture.RequireRoot(t)
	var rootfs fixture.PerTest
	for _, order := range [][2]string{{"libcontainer", "parallels"}, {"parallels", "libcontainer"}} {
		t.Run(order[0]+" then "+order[1], func(t *testing.T) {
			ctx := context.Background()
			root := filepath.Join(fixture.TempDir(t), "state")
			first, err := openBackend(t, order[0], root)
			require.NoError(t, err)
			cfg := &runtime.Config{Spec: runtime.DefaultSpec(rootfs.For(t), "/bin/sleep", "1000"),
				Volumes: []volume.Spec{{Destination: "/scratch", TmpfsSize: 1 << 20}}}
			id := runtimetest.NewID("owned")
			c, err := first.Create(ctx, id, cfg)
			require.NoError(t, err)
			t.Cleanup(func() { _ = c.Delete(context.Background(), runtime.DeleteOptions{Force: true}) })
			require.NoError(t, c.Start(ctx))

			_, err = openBackend(t, order[1], root)
			require.Truef(t, errdefs.IsFailedPrecondition(err), "%s on a %s root: %v", order[1], order[0], err)
			require.Contains(t, err.Error(), order[0])

			st, err := c.State(ctx)
			require.NoError(t, err)
			require.Equal(t, runtime.StatusRunning, st)
			vols, err := c.Volumes(ctx)
			require.NoError(t, err)
			require.Len(t, vols, 1, "the container's volume records survive the other backend's open")
			again, err := openBackend(t, order[0], root)
			require.NoError(t, err, "the owner opens its root again")
			l, err := again.List(ctx)
			require.NoError(t, err)
			require.Len(t, l, 1)
			require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{Force: true}))
		})
	}
}

// User namespace ID blocks come from one pool for the host: containers on
// different state roots, of different backends, never share host IDs.
func TestIDBlocksAreHostWide(t *testing.T) {
	fixture.RequireRoot(t)
	var rootfs fixture.PerTest
	ctx := context.Background()
	type got struct{ start, end uint64 }
	var blocks []got
	for _, name := range []string{"libcontainer", "parallels", "libcontainer"} {
		rt, err := openBackend(t, name, filepath.Join(fixture.TempDir(t), "state"))
		require.NoError(t, err)
		for range 2 {
			c, err := rt.Create(ctx, runtimetest.NewID("pool"), &runtime.Config{Spec: runtime.DefaultSpec(rootfs.For(t), "/bin/true"), UserNamespace: true})
			require.NoError(t, err)
			t.Cleanup(func() { _ = c.Delete(context.Background(), runtime.DeleteOptions{Force: true}) })
			info, err := c.Info(ctx)
			require.NoError(t, err)
			m := info.Spec.Linux.UIDMappings[0]
			b := got{uint64(m.HostID), uint64(m.HostID) + uint64(m.Size)}
			for _, o := range blocks {
				require.Falsef(t, b.start < o.end && o.start < b.end, "%s container got host IDs %v, overlapping %v of another root", name, b, o)
			}
			blocks = append(blocks, b)
		}
	}
}
