// Package phase records how long the named phases of an operation take:
// what a benchmark breaks a container's create, start, wait and delete
// into. A Recorder rides in a context (NewContext); code on the way marks
// the end of each of its phases on a Span. Without a recorder nothing is
// recorded and a Span costs a context lookup and a nil check: the
// instrumentation is always compiled in.
package phase

import (
	"context"
	"sync"
	"time"
)

// Recorder adds up the time of each named phase. It is safe for
// concurrent use; a nil Recorder records nothing.
type Recorder struct {
	mu    sync.Mutex
	order []string
	sums  map[string]*Phase
}

// Phase is one named phase's total time over the Count times it ran.
type Phase struct {
	Name  string
	Total time.Duration
	Count int
}

// Add records that phase name took d.
func (r *Recorder) Add(name string, d time.Duration) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.sums[name]
	if !ok {
		if r.sums == nil {
			r.sums = map[string]*Phase{}
		}
		p = &Phase{Name: name}
		r.sums[name] = p
		r.order = append(r.order, name)
	}
	p.Total += d
	p.Count++
}

// Phases returns the phases recorded, in the order each was first seen.
func (r *Recorder) Phases() []Phase {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Phase, 0, len(r.order))
	for _, n := range r.order {
		out = append(out, *r.sums[n])
	}
	return out
}

// Reset forgets what was recorded.
func (r *Recorder) Reset() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.order, r.sums = nil, nil
}

type key struct{}

// NewContext returns ctx carrying r: the phases of what runs under it are
// recorded there.
func NewContext(ctx context.Context, r *Recorder) context.Context {
	return context.WithValue(ctx, key{}, r)
}

// FromContext returns the recorder ctx carries, or nil.
func FromContext(ctx context.Context) *Recorder {
	if ctx == nil {
		return nil
	}
	r, _ := ctx.Value(key{}).(*Recorder)
	return r
}

// Span times consecutive phases: each Mark ends one and begins the next.
// The zero Span records nothing.
type Span struct {
	r *Recorder
	t time.Time
}

// Begin starts a span on ctx's recorder (none: a span that records
// nothing).
func Begin(ctx context.Context) Span {
	return FromContext(ctx).Begin()
}

// Begin starts a span on r.
func (r *Recorder) Begin() Span {
	if r == nil {
		return Span{}
	}
	return Span{r: r, t: time.Now()}
}

// Mark records the phase that ends now as name and begins the next.
func (s *Span) Mark(name string) {
	if s.r == nil {
		return
	}
	now := time.Now()
	s.r.Add(name, now.Sub(s.t))
	s.t = now
}

// Skip begins the next phase now without recording the one that ends:
// what ran meanwhile recorded its own phases.
func (s *Span) Skip() {
	if s.r == nil {
		return
	}
	s.t = time.Now()
}
