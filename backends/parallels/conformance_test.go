package parallels_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/backends/parallels"
	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/runtimetest"
)

func TestMain(m *testing.M) {
	libcontainer.Init()
	os.Exit(m.Run())
}

type harness struct {
	fs     string
	rootfs fixture.PerTest
}

func (h *harness) open(t *testing.T, root string) *runtime.Runtime {
	e, err := parallels.Open(root, parallels.WithFilesystem(h.fs), parallels.WithDefaultDiskSize(64<<20))
	require.NoError(t, err)
	store, err := image.Open(filepath.Join(root, "images"))
	require.NoError(t, err)
	rt, err := runtime.New(e, runtime.WithStateDir(root), runtime.WithImageStore(store))
	require.NoError(t, err)
	t.Cleanup(func() { rt.Close() })
	return rt
}

func (h *harness) Open(t *testing.T) *runtime.Runtime {
	return h.open(t, filepath.Join(fixture.TempDir(t), "state"))
}

func (h *harness) Reopen(t *testing.T, rt *runtime.Runtime) *runtime.Runtime {
	return h.open(t, stateRoot(t, rt))
}

// stateRoot is the root the harness opened rt on.
func stateRoot(t *testing.T, rt *runtime.Runtime) string {
	var e *parallels.Runtime
	require.True(t, rt.As(&e))
	return filepath.Dir(e.Base())
}

func (h *harness) Config(t *testing.T, args ...string) *runtime.Config {
	return &runtime.Config{Spec: runtime.DefaultSpec(h.rootfs.For(t), args...)}
}

func (h *harness) Leftovers(t *testing.T, rt *runtime.Runtime, id string) []string {
	return leftovers(t, stateRoot(t, rt), id)
}

func TestConformance(t *testing.T) {
	fixture.RequireRoot(t)
	runtimetest.Run(t, &harness{fs: "ext4"})
}

// xfs disks grow online with CAP_SYS_ADMIN alone, where a sandbox without
// CAP_SYS_RESOURCE cannot grow ext4.
func TestConformanceXFS(t *testing.T) {
	fixture.RequireRoot(t)
	runtimetest.Run(t, &harness{fs: "xfs"})
}
