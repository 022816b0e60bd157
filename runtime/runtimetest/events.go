package runtimetest

import (
	"context"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/runtime"
)

// testEvents: Runtime.Events on every backend. Its parts run one after the
// other, so that the goroutines of event watches can be counted.
func testEvents(t *testing.T, h Harness) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"Lifecycle", testEventsLifecycle},
		{"PauseResume", testEventsPauseResume},
		{"OtherRuntime", testEventsOtherRuntime},
		{"TwoSubscribers", testEventsTwoSubscribers},
		{"SlowSubscriber", testEventsSlowSubscriber},
		{"OOMKilled", testEventsOOMKilled},
		{"End", testEventsEnd},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, h) })
	}
}

// subscribe subscribes to rt's events until the test ends.
func subscribe(ctx context.Context, t *testing.T, rt *runtime.Runtime, opts runtime.EventsOptions) *eventReader {
	t.Helper()
	sub, err := rt.Events(ctx, opts)
	require.NoError(t, err)
	t.Cleanup(func() { sub.Close() })
	return &eventReader{sub: sub, stash: map[string][]runtime.Event{}}
}

// eventReader reads a subscription's events container by container.
type eventReader struct {
	sub   *runtime.Subscription
	stash map[string][]runtime.Event // read, of other containers
}

// next returns the next event of container id.
func (r *eventReader) next(ctx context.Context, t *testing.T, id string) runtime.Event {
	t.Helper()
	for len(r.stash[id]) == 0 {
		select {
		case ev, ok := <-r.sub.Events():
			require.Truef(t, ok, "the subscription ended waiting for %s's events: %v", id, r.sub.Err())
			r.stash[ev.ID] = append(r.stash[ev.ID], ev)
		case <-ctx.Done():
			t.Fatalf("no event of %s: %v", id, ctx.Err())
		}
	}
	ev := r.stash[id][0]
	r.stash[id] = r.stash[id][1:]
	return ev
}

// statusAfter is the state a container is in after each event.
var statusAfter = map[runtime.EventType]runtime.Status{
	runtime.EventCreated: runtime.StatusCreated,
	runtime.EventStarted: runtime.StatusRunning,
	runtime.EventPaused:  runtime.StatusPaused,
	runtime.EventResumed: runtime.StatusRunning,
	runtime.EventStopped: runtime.StatusStopped,
	runtime.EventDeleted: "",
}

// expect reads the next events of container id and checks they are of
// types, in order, each with the state after it and a time that does not
// go back.
func (r *eventReader) expect(ctx context.Context, t *testing.T, id string, types ...runtime.EventType) []runtime.Event {
	t.Helper()
	var out []runtime.Event
	for _, typ := range types {
		ev := r.next(ctx, t, id)
		require.Equalf(t, typ, ev.Type, "%s's events so far: %+v, then %+v", id, out, ev)
		require.Equal(t, id, ev.ID)
		require.Equal(t, statusAfter[typ], ev.Status, "state after %s", typ)
		require.False(t, ev.Time.IsZero(), "%s has a time", typ)
		if len(out) > 0 {
			require.False(t, ev.Time.Before(out[len(out)-1].Time), "%s's events go back in time: %+v, then %+v", id, out, ev)
		}
		if typ != runtime.EventStopped {
			require.Nil(t, ev.Exit, "only a stopped event has an exit")
		}
		out = append(out, ev)
	}
	return out
}

// requireNoMore checks that no event of id comes within a moment.
func (r *eventReader) requireNoMore(t *testing.T, id string) {
	t.Helper()
	require.Empty(t, r.stash[id], "more events of %s", id)
	wait := time.After(1500 * time.Millisecond) // more than a rescan
	for {
		select {
		case ev, ok := <-r.sub.Events():
			if !ok {
				return
			}
			require.NotEqual(t, id, ev.ID, "unexpected event %+v", ev)
			r.stash[ev.ID] = append(r.stash[ev.ID], ev)
		case <-wait:
			return
		}
	}
}

// drain reads the rest of a subscription, which must end within the
// test's time, and returns it.
func drain(ctx context.Context, t *testing.T, sub *runtime.Subscription) []runtime.Event {
	t.Helper()
	var out []runtime.Event
	for {
		select {
		case ev, ok := <-sub.Events():
			if !ok {
				return out
			}
			out = append(out, ev)
		case <-ctx.Done():
			t.Fatalf("the subscription did not end: %v", ctx.Err())
		}
	}
}

// A container's life, exit on its own included, in order, with the exit
// status and the times; the runtime's own actions and what it observed.
func testEventsLifecycle(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	events := subscribe(ctx, t, rt, runtime.EventsOptions{})
	before := time.Now().Add(-time.Second) // a daemon's clock may be a little off
	id := NewID("evlife")
	c := create(t, rt, id, h.Config(t, "/bin/sh", "-c", "exit 3"))
	require.NoError(t, c.Start(ctx))
	evs := events.expect(ctx, t, id, runtime.EventCreated, runtime.EventStarted, runtime.EventStopped)
	require.False(t, evs[0].Time.Before(before), "created at %v, before the create at %v", evs[0].Time, before)
	stopped := evs[2]
	require.NotNil(t, stopped.Exit)
	require.Equal(t, 3, stopped.Exit.Code)
	require.Zero(t, stopped.Exit.Signal)
	require.False(t, stopped.Exit.OOMKilled)
	require.False(t, stopped.Time.After(time.Now().Add(time.Second)))
	es, err := c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 3, es.Code)

	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	events.expect(ctx, t, id, runtime.EventDeleted)
	events.requireNoMore(t, id)

	// A created container deleted never stopped; one deleted running by
	// force did.
	id = NewID("evcreated")
	c = create(t, rt, id, h.Config(t, "/bin/sleep", "1000"))
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	events.expect(ctx, t, id, runtime.EventCreated, runtime.EventDeleted)
	id = NewID("evforce")
	c = create(t, rt, id, h.Config(t, "/bin/sleep", "1000"))
	require.NoError(t, c.Start(ctx))
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{Force: true}))
	evs = events.expect(ctx, t, id, runtime.EventCreated, runtime.EventStarted, runtime.EventStopped, runtime.EventDeleted)
	require.NotNil(t, evs[2].Exit)
	require.Equal(t, 137, evs[2].Exit.Code)
	events.requireNoMore(t, id)
}

func testEventsPauseResume(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	if !rt.Capabilities().Pause {
		t.Skip("backend cannot pause")
	}
	events := subscribe(ctx, t, rt, runtime.EventsOptions{})
	id := NewID("evpause")
	c := create(t, rt, id, h.Config(t, "/bin/sleep", "1000"))
	require.NoError(t, c.Start(ctx))
	require.NoError(t, c.Pause(ctx))
	require.NoError(t, c.Resume(ctx))
	require.NoError(t, c.Kill(ctx, syscall.SIGKILL))
	evs := events.expect(ctx, t, id, runtime.EventCreated, runtime.EventStarted, runtime.EventPaused, runtime.EventResumed, runtime.EventStopped)
	require.NotNil(t, evs[4].Exit)
	require.Equal(t, 137, evs[4].Exit.Code)
	require.Equal(t, syscall.SIGKILL, evs[4].Exit.Signal)
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	events.expect(ctx, t, id, runtime.EventDeleted)
}

// What another runtime on the same state does reaches this runtime's
// subscribers: a kill of this runtime's container, and the life of its
// own container, one step at a time.
func testEventsOtherRuntime(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	events := subscribe(ctx, t, rt, runtime.EventsOptions{})
	rt2 := h.Reopen(t, rt)

	mine := NewID("evmine")
	create(t, rt, mine, h.Config(t, "/bin/sleep", "1000"))
	c, err := rt.Get(ctx, mine)
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx))
	events.expect(ctx, t, mine, runtime.EventCreated, runtime.EventStarted)
	c2, err := rt2.Get(ctx, mine)
	require.NoError(t, err)
	require.NoError(t, c2.Kill(ctx, syscall.SIGKILL))
	stopped := events.expect(ctx, t, mine, runtime.EventStopped)[0]
	require.NotNil(t, stopped.Exit, "the exit status of a kill from elsewhere")
	require.Equal(t, 137, stopped.Exit.Code)
	require.NoError(t, c2.Delete(ctx, runtime.DeleteOptions{}))
	events.expect(ctx, t, mine, runtime.EventDeleted)

	theirs := NewID("evtheirs")
	c2 = create(t, rt2, theirs, h.Config(t, "/bin/sleep", "1000"))
	events.expect(ctx, t, theirs, runtime.EventCreated)
	require.NoError(t, c2.Start(ctx))
	events.expect(ctx, t, theirs, runtime.EventStarted)
	require.NoError(t, c2.Kill(ctx, syscall.SIGKILL))
	stopped = events.expect(ctx, t, theirs, runtime.EventStopped)[0]
	require.NotNil(t, stopped.Exit)
	require.Equal(t, 137, stopped.Exit.Code)
	require.NoError(t, c2.Delete(ctx, runtime.DeleteOptions{}))
	events.expect(ctx, t, theirs, runtime.EventDeleted)
	events.requireNoMore(t, theirs)
}

// Two subscribers see the same events; one closing leaves the other be.
func testEventsTwoSubscribers(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	a := subscribe(ctx, t, rt, runtime.EventsOptions{})
	b := subscribe(ctx, t, rt, runtime.EventsOptions{})
	id := NewID("evtwo")
	c := create(t, rt, id, h.Config(t, "/bin/true"))
	require.NoError(t, c.Start(ctx))
	_, err := c.Wait(ctx)
	require.NoError(t, err)
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	types := []runtime.EventType{runtime.EventCreated, runtime.EventStarted, runtime.EventStopped, runtime.EventDeleted}
	require.Equal(t, a.expect(ctx, t, id, types...), b.expect(ctx, t, id, types...))

	require.NoError(t, a.sub.Close())
	require.Empty(t, drain(ctx, t, a.sub))
	require.NoError(t, a.sub.Err(), "closed by its subscriber")
	id = NewID("evtwo")
	c = create(t, rt, id, h.Config(t, "/bin/true"))
	b.expect(ctx, t, id, runtime.EventCreated)
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	b.expect(ctx, t, id, runtime.EventDeleted)
}

// A subscriber that never reads holds up neither the runtime nor the
// others: it loses its subscription once its buffer is full, and learns
// why after the events it was sent.
func testEventsSlowSubscriber(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	_, err := rt.Events(ctx, runtime.EventsOptions{Buffer: -1})
	require.True(t, isInvalidArgument(err), "%v", err)
	slow, err := rt.Events(ctx, runtime.EventsOptions{Buffer: 2})
	require.NoError(t, err)
	defer slow.Close()
	fast := subscribe(ctx, t, rt, runtime.EventsOptions{})

	id := NewID("evslow")
	c := create(t, rt, id, h.Config(t, "/bin/true"))
	require.NoError(t, c.Start(ctx))
	_, err = c.Wait(ctx)
	require.NoError(t, err)
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	fast.expect(ctx, t, id, runtime.EventCreated, runtime.EventStarted, runtime.EventStopped, runtime.EventDeleted)

	kept := drain(ctx, t, slow)
	require.Len(t, kept, 2, "the events that fit its buffer")
	require.Equal(t, runtime.EventCreated, kept[0].Type)
	require.Equal(t, runtime.EventStarted, kept[1].Type)
	require.True(t, errdefs.IsResourceExhausted(slow.Err()), "%v", slow.Err())
}

// The kernel's OOM killer ending a container is flagged on its exit.
func testEventsOOMKilled(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	events := subscribe(ctx, t, rt, runtime.EventsOptions{})
	id := NewID("evoom")
	// The shell doubles a string until the memory limit stops it.
	cfg := h.Config(t, "/bin/sh", "-c", "x=0123456789abcdef; while true; do x=$x$x; done")
	limit := int64(32 << 20)
	cfg.Spec.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &limit}
	if hostHasSwap() {
		cfg.Spec.Linux.Resources.Memory.Swap = &limit // memory and swap together
	}
	c := create(t, rt, id, cfg)
	require.NoError(t, c.Start(ctx))
	stopped := events.expect(ctx, t, id, runtime.EventCreated, runtime.EventStarted, runtime.EventStopped)[2]
	require.NotNil(t, stopped.Exit)
	require.True(t, stopped.Exit.OOMKilled, "exit %+v", stopped.Exit)
	require.Equal(t, syscall.SIGKILL, stopped.Exit.Signal)
	es, err := c.Wait(ctx)
	require.NoError(t, err)
	require.True(t, es.OOMKilled, "Wait tells too")
	info, err := c.Info(ctx)
	require.NoError(t, err)
	require.NotNil(t, info.Exit)
	require.True(t, info.Exit.OOMKilled, "and Info")
}

// hostHasSwap reports whether the host swaps: a memory limit alone would
// then let the container swap instead of being killed.
func hostHasSwap() bool {
	b, err := os.ReadFile("/proc/swaps")
	return err == nil && strings.Count(strings.TrimSpace(string(b)), "\n") > 0
}

// A subscription ends with its context, with Close, or with its runtime,
// and whatever it started ends with it.
func testEventsEnd(t *testing.T, h Harness) {
	tctx := testContext(t)
	requireNoEventGoroutines(t)
	rt := h.Open(t)
	c := create(t, rt, NewID("evend"), h.Config(t, "/bin/sleep", "1000"))
	require.NoError(t, c.Start(tctx)) // a running container: an exit to wait for

	ctx, cancel := context.WithCancel(tctx)
	sub, err := rt.Events(ctx, runtime.EventsOptions{})
	require.NoError(t, err)
	n, stacks := eventGoroutines()
	require.Positive(t, n, "a subscription watches the containers\n%s", stacks)
	cancel()
	drain(tctx, t, sub)
	require.ErrorIs(t, sub.Err(), context.Canceled)
	requireNoEventGoroutines(t)
	_, err = rt.Events(ctx, runtime.EventsOptions{})
	require.ErrorIs(t, err, context.Canceled)

	sub, err = rt.Events(tctx, runtime.EventsOptions{})
	require.NoError(t, err)
	require.NoError(t, sub.Close())
	require.NoError(t, sub.Close(), "again")
	drain(tctx, t, sub)
	require.NoError(t, sub.Err())
	requireNoEventGoroutines(t)

	rt2 := h.Reopen(t, rt)
	sub, err = rt2.Events(tctx, runtime.EventsOptions{})
	require.NoError(t, err)
	require.NoError(t, rt2.Close())
	drain(tctx, t, sub)
	require.True(t, errdefs.IsUnavailable(sub.Err()), "%v", sub.Err())
	_, err = rt2.Events(tctx, runtime.EventsOptions{})
	require.True(t, errdefs.IsUnavailable(err), "%v", err)
	requireNoEventGoroutines(t)
}

// requireNoEventGoroutines waits until no goroutine runs berth's event
// code, as goleak would.
func requireNoEventGoroutines(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, stacks := eventGoroutines()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines of event watches left:\n%s", n, stacks)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// eventGoroutines counts the goroutines running, or started by, berth's
// event code (a file events.go of the module outside this suite: the
// runtime's and a backend's) and returns their stacks.
func eventGoroutines() (int, string) {
	buf := make([]byte, 1<<20)
	for {
		n := goruntime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var n int
	var stacks []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		lines := strings.Split(g, "\n")
		for i := 1; i+1 < len(lines); i += 2 {
			fn := strings.TrimPrefix(lines[i], "created by ")
			file := filepath.Base(strings.TrimSpace(lines[i+1]))
			if strings.HasPrefix(fn, "github.com/berthrun/berth/") && !strings.HasPrefix(fn, "github.com/berthrun/berth/runtime/runtimetest.") && strings.HasPrefix(file, "events.go:") {
				n++
				stacks = append(stacks, g)
				break
			}
		}
	}
	return n, strings.Join(stacks, "\n\n")
}
