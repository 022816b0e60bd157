package libcontainer_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
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
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				c, err := rt.Create(ctx, fmt.Sprintf("bench-%d", i), &runtime.Config{Spec: runtime.DefaultSpec(rootfs, "/bin/true")})
				if err != nil {
					b.Fatal(err)
				}
				if err := c.Start(ctx); err != nil {
					b.Fatal(err)
				}
				if st, err := c.Wait(ctx); err != nil || st.Code != 0 {
					b.Fatal(st, err)
				}
				if err := c.Delete(ctx, runtime.DeleteOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
