package libcontainer_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/runtimetest"
)

func TestMain(m *testing.M) {
	libcontainer.Init()
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(runChild(mode))
	}
	os.Exit(m.Run())
}

type harness struct {
	opts   []libcontainer.Option
	rootfs fixture.PerTest
}

func (h *harness) open(t *testing.T, root string) *runtime.Runtime {
	e, err := libcontainer.Open(root, h.opts...)
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

func root(t *testing.T, rt *runtime.Runtime) string {
	var e *libcontainer.Runtime
	require.True(t, rt.As(&e))
	return e.Root()
}

func (h *harness) Reopen(t *testing.T, rt *runtime.Runtime) *runtime.Runtime {
	return h.open(t, root(t, rt))
}

func (h *harness) Config(t *testing.T, args ...string) *runtime.Config {
	return &runtime.Config{Spec: runtime.DefaultSpec(h.rootfs.For(t), args...)}
}

func (h *harness) Leftovers(t *testing.T, rt *runtime.Runtime, id string) []string {
	var left []string
	r := root(t, rt)
	for _, p := range []string{filepath.Join(r, "containers", id), filepath.Join(r, "runc", id)} {
		if _, err := os.Lstat(p); err == nil {
			left = append(left, p)
		}
	}
	for _, ctl := range []string{"memory", "cpu", "pids", "freezer", "devices", "blkio", "cpuset", "unified"} {
		p := filepath.Join("/sys/fs/cgroup", ctl, "berth", id)
		if _, err := os.Stat(p); err == nil {
			left = append(left, p)
		}
	}
	return append(left, mountsUnder(t, filepath.Join(r, "containers", id))...)
}

// mountsUnder lists mount points at or below dir.
func mountsUnder(t *testing.T, dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	require.NoError(t, err)
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			out = append(out, "mount "+fields[4])
		}
	}
	return out
}

func TestConformance(t *testing.T) {
	fixture.RequireRoot(t)
	runtimetest.Run(t, &harness{})
}

// The attached mode (no monitor process) keeps the same contract.
func TestConformanceAttached(t *testing.T) {
	fixture.RequireRoot(t)
	runtimetest.Run(t, &harness{opts: []libcontainer.Option{libcontainer.Attached()}})
}
