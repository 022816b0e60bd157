package phase_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/berthrun/berth/internal/phase"
)

func TestSpanRecordsConsecutivePhases(t *testing.T) {
	rec := &phase.Recorder{}
	ctx := phase.NewContext(context.Background(), rec)
	for range 2 {
		sp := phase.Begin(ctx)
		time.Sleep(2 * time.Millisecond)
		sp.Mark("a")
		time.Sleep(time.Millisecond)
		sp.Skip()
		sp.Mark("b")
	}
	ps := rec.Phases()
	if len(ps) != 2 || ps[0].Name != "a" || ps[1].Name != "b" {
		t.Fatalf("phases %+v, want a then b", ps)
	}
	if ps[0].Count != 2 || ps[1].Count != 2 {
		t.Fatalf("counts %+v, want 2 each", ps)
	}
	// Sleeps last at least what they ask: a's two sleeps are in a; the
	// skipped ones in neither.
	if ps[0].Total < 4*time.Millisecond {
		t.Fatalf("a took %v, less than its sleeps", ps[0].Total)
	}
	if ps[1].Total >= ps[0].Total {
		t.Fatalf("b (%v) holds the skipped sleeps: a took %v", ps[1].Total, ps[0].Total)
	}
	rec.Reset()
	if ps := rec.Phases(); len(ps) != 0 {
		t.Fatalf("after Reset: %+v", ps)
	}
}

func TestNoRecorderRecordsNothing(t *testing.T) {
	if phase.FromContext(context.Background()) != nil {
		t.Fatal("a recorder out of nowhere")
	}
	sp := phase.Begin(context.Background())
	sp.Mark("x") // must not panic
	sp.Skip()
	var r *phase.Recorder
	r.Add("x", time.Second)
	if r.Phases() != nil {
		t.Fatal("a nil recorder recorded")
	}
}

func TestConcurrentAdds(t *testing.T) {
	rec := &phase.Recorder{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				rec.Add("x", time.Microsecond)
			}
		})
	}
	wg.Wait()
	if ps := rec.Phases(); len(ps) != 1 || ps[0].Count != 800 || ps[0].Total != 800*time.Microsecond {
		t.Fatalf("phases %+v, want x 800 times, 800µs", ps)
	}
}
