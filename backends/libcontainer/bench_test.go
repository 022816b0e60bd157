package libcontainer_test

import (
	"path/filepath"
	"testing"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/runtimetest"
)

// BenchmarkRunTrue measures create+start+wait+delete of /bin/true, with a
// monitor process per container (the default) and attached to the calling
// process (what `berthctl run` uses). scripts/bench-run.sh compares the
// whole berthctl command with runc and lxc-execute.
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
