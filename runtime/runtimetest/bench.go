package runtimetest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/berthrun/berth/internal/phase"
	"github.com/berthrun/berth/runtime"
)

// BenchmarkRunTrue times, per iteration, create+start+wait+delete of a
// container of cfg (which must run a command that exits 0, /bin/true).
// Backends' benchmarks call it with their runtimes, so that their numbers
// measure the same work. It also reports, in ms/op, the phases the
// runtime and its backend recorded (ReportPhases).
func BenchmarkRunTrue(b *testing.B, rt *runtime.Runtime, cfg func() *runtime.Config) {
	rec := &phase.Recorder{}
	ctx := phase.NewContext(context.Background(), rec)
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
	ReportPhases(b, rec)
}

// ReportPhases reports what rec recorded over the benchmark's loop, in
// ms/op per phase (metric "<phase>-ms/op"), and prints them to stdout in
// the order they ran (b.Log would keep 10 lines of them). A phase "p/q"
// is part of phase "p": p's metric is then what its parts leave, as
// "p/other". "other" is the time of the loop no phase accounts for; the
// metrics add up to ns/op.
func ReportPhases(b *testing.B, rec *phase.Recorder) {
	ps := rec.Phases()
	if len(ps) == 0 || b.N == 0 {
		return
	}
	own := map[string]time.Duration{}
	for _, p := range ps {
		own[p.Name] += p.Total
		if i := strings.LastIndexByte(p.Name, '/'); i > 0 {
			own[p.Name[:i]] -= p.Total
		}
	}
	perOp := func(d time.Duration) float64 { return float64(d) / float64(b.N) / 1e6 }
	var sb strings.Builder
	var counted time.Duration
	fmt.Fprintf(&sb, "phases of %s, ms/op (times per op):\n", b.Name())
	line := func(name string, d time.Duration, n int) {
		fmt.Fprintf(&sb, "  %-32s %7.3f (%.3g)\n", name, perOp(d), float64(n)/float64(b.N))
	}
	// A part is recorded as it ends, before the whole it is part of:
	// the whole is listed where its first part ran, then its parts.
	byName := map[string]phase.Phase{}
	for _, p := range ps {
		byName[p.Name] = p
	}
	listed := map[string]bool{}
	for _, p := range ps {
		if i := strings.LastIndexByte(p.Name, '/'); i > 0 && !listed[p.Name[:i]] {
			if whole, ok := byName[p.Name[:i]]; ok {
				line(whole.Name, whole.Total, whole.Count)
				listed[whole.Name] = true
			}
		}
		name := p.Name
		if own[name] != p.Total { // has parts: what they leave
			if !listed[name] {
				line(name, p.Total, p.Count)
				listed[name] = true
			}
			name += "/other"
		}
		b.ReportMetric(perOp(own[p.Name]), name+"-ms/op")
		counted += own[p.Name]
		line(name, own[p.Name], p.Count)
	}
	b.ReportMetric(perOp(b.Elapsed()-counted), "other-ms/op")
	fmt.Fprintf(&sb, "  %-32s %7.3f\n  %-32s %7.3f\n", "other", perOp(b.Elapsed()-counted), "total", perOp(b.Elapsed()))
	fmt.Print(sb.String())
}
