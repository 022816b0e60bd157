package libcontainer_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/runtimetest"
)

// BenchmarkRunTrue measures create+start+wait+delete of /bin/true, with a
// monitor process per container (the default) and attached to the calling
// process (what `berthctl run` uses), and the time of each phase of them
// (runtimetest.ReportPhases: runtime bookkeeping, state writes, the
// libcontainer calls). scripts/bench-run.sh compares the whole berthctl
// command with runc and lxc-execute.
func BenchmarkRunTrue(b *testing.B) {
	fixture.RequireRoot(b)
	rootfs := fixture.BusyboxTB(b)
	for _, mode := range []struct {
		name string
		opts []libcontainer.Option
	}{{"monitor", nil}, {"attached", []libcontainer.Option{libcontainer.Attached()}}} {
		b.Run(mode.name, func(b *testing.B) {
			root := filepath.Join(fixture.TempDir(b), "state")
			engine, err := libcontainer.Open(root, mode.opts...)
			if err != nil {
				b.Fatal(err)
			}
			rt, err := runtime.New(engine, runtime.WithStateDir(root))
			if err != nil {
				b.Fatal(err)
			}
			runtimetest.BenchmarkRunTrue(b, rt, func() *runtime.Config {
				return &runtime.Config{Spec: runtime.DefaultSpec(rootfs, "/bin/true")}
			})
		})
	}
}

// BenchmarkInfoRunning measures Info of a running container: what a CRI
// server's ContainerStatus and ListContainers cost (critest -benchmark,
// scripts/bench-cri.sh).
func BenchmarkInfoRunning(b *testing.B) {
	fixture.RequireRoot(b)
	ctx := context.Background()
	root := filepath.Join(fixture.TempDir(b), "state")
	engine, err := libcontainer.Open(root)
	if err != nil {
		b.Fatal(err)
	}
	rt, err := runtime.New(engine, runtime.WithStateDir(root))
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close()
	id := runtimetest.NewID("info")
	c, err := rt.Create(ctx, id, &runtime.Config{Spec: runtime.DefaultSpec(fixture.BusyboxTB(b), "/bin/sleep", "1000")})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Delete(ctx, runtime.DeleteOptions{Force: true})
	if err := c.Start(ctx); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if info, err := rt.Info(ctx, id); err != nil || info.Status != runtime.StatusRunning {
			b.Fatal(info, err)
		}
	}
}
