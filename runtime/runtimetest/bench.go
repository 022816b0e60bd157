package runtimetest

import (
	"context"
	"fmt"
	"testing"

	"github.com/berthrun/berth/runtime"
)

// BenchmarkRunTrue times, per iteration, create+start+wait+delete of a
// container of cfg (which must run a command that exits 0, /bin/true).
// Backends' benchmarks call it with their runtimes, so that their numbers
// measure the same work.
func BenchmarkRunTrue(b *testing.B, rt *runtime.Runtime, cfg func() *runtime.Config) {
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		c, err := rt.Create(ctx, fmt.Sprintf("bench-%d", i), cfg())
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
}
