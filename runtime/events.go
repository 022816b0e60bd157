package runtime

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/berthrun/berth/internal/errclass"
	"github.com/berthrun/berth/runtime/driver"
)

// DefaultEventBuffer is how many events a subscription holds for its
// subscriber unless EventsOptions says otherwise.
const DefaultEventBuffer = 1024

// rescanInterval is how often a runtime over a backend without events of
// its own (no driver.EventSource) lists the containers while anyone
// subscribes: what other processes did shows up within it.
const rescanInterval = time.Second

// EventsOptions tune Events.
type EventsOptions struct {
	// Buffer is how many events may wait for the subscriber to read them
	// (default DefaultEventBuffer). A subscriber that falls further
	// behind loses its subscription (see Subscription.Err).
	Buffer int
}

// Events subscribes to the events of this runtime's containers: created,
// started, paused, resumed, stopped (with the exit status when it is
// known, OOM kills flagged as far as the backend can tell) and deleted,
// each with the container's ID, its time and the container's state after
// it. Every subscriber gets the events that happen after Events returns, in
// the same order, which for each container is the order they happened in
// (and a container's times never go back); none blocks the runtime or
// another subscriber. The subscription ends when ctx ends, with Close, or
// as Subscription.Err says.
//
// What is observed depends on the backend. One whose engine reports its
// own events (Capabilities.Events: Docker) is followed: every change,
// whoever made it (this runtime, another process, the engine), with the
// engine's times. On the others (the embedded engine, parallels) the
// runtime watches by itself:
//
//   - what this runtime does (create, import, start, pause, resume,
//     delete) is reported as it returns;
//   - the exit of every running or paused container is waited for,
//     whoever caused it (the container's own end, a kill from this or
//     another process, the OOM killer), and reported at once, with its
//     time;
//   - what other processes do on the same state directory is seen by
//     listing the containers every second while anyone subscribes: such
//     a change is reported as the events that lead from the state seen
//     before to the state seen now, stamped when it was seen (a created
//     event carries the creation time, a stopped one the exit's). A
//     change undone within the second is not seen, and a container
//     another process starts that ends within it shows as stopped without
//     started.
func (r *Runtime) Events(ctx context.Context, opts EventsOptions) (*Subscription, error) {
	if opts.Buffer < 0 {
		return nil, fmt.Errorf("events: buffer %d: %w", opts.Buffer, errdefs.ErrInvalidArgument)
	}
	if opts.Buffer == 0 {
		opts.Buffer = DefaultEventBuffer
	}
	return r.events.subscribe(ctx, opts.Buffer)
}

// Subscription is a stream of events (Runtime.Events). Its methods are
// safe for concurrent use.
type Subscription struct {
	h  *eventHub
	ch chan Event
	// stop undoes the end registered on the subscription's context.
	stop func() bool
	err  error // why it ended; under h.mu
}

// Events returns the channel the events come on. Once the subscription
// ends it is closed, after the events sent before: Err then says why.
func (s *Subscription) Events() <-chan Event { return s.ch }

// Err says why the subscription ended:
//
//   - nil while it goes on, and after Close;
//   - the context's error once the context given to Events ended;
//   - resource-exhausted when the subscriber fell more than its buffer
//     behind: the events after those in the channel were not kept (List
//     says where each container stands now, and a new subscription
//     follows from there);
//   - unavailable when the backend's engine stopped reporting events, or
//     the runtime was closed.
func (s *Subscription) Err() error {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	return s.err
}

// Close ends the subscription; Err stays nil. It always returns nil.
func (s *Subscription) Close() error {
	s.h.end(s, nil)
	return nil
}

// errRuntimeClosed ends the subscriptions of a closed runtime. (A
// function: see errBoxSize.)
func errRuntimeClosed() error {
	return fmt.Errorf("events: runtime closed: %w", errdefs.ErrUnavailable)
}

// eventHub hands a runtime's events to its subscribers and, while there
// are any, watches the containers (eventWatch).
type eventHub struct {
	d driver.Runtime
	// source is the backend's own event stream; nil when the hub reports
	// the runtime's actions and waits for exits itself.
	source driver.EventSource

	mu   sync.Mutex
	subs map[*Subscription]struct{}
	// inflight counts the actions of this runtime under way on each
	// container: a listing leaves those containers to the action's own
	// event.
	inflight map[string]int
	watch    *eventWatch // nil while nobody subscribes
	closed   bool
	// wg counts the goroutines of every watch, ended or not.
	wg sync.WaitGroup
}

// eventWatch follows the containers for as long as anyone subscribes.
type eventWatch struct {
	ctx    context.Context
	cancel context.CancelFunc
	// seq numbers the events reported.
	seq uint64
	// known is where each container stood at its last event (or when
	// first listed).
	known map[string]*tracked
	// unsettled are the containers the last listing showed stopped with
	// no exit yet (see compareLocked).
	unsettled map[string]bool
}

// tracked is one container of a watch.
type tracked struct {
	status Status
	seq    uint64    // the watch's seq at its last event
	time   time.Time // its last event's
	// waiting is true while an exit waiter runs for it.
	waiting bool
	// pending: listed while an action of this runtime on it was under
	// way, so the listing may already show the action's outcome: the
	// action's event is reported all the same.
	pending bool
}

func newEventHub(d driver.Runtime, source driver.EventSource) *eventHub {
	return &eventHub{d: d, source: source, subs: map[*Subscription]struct{}{}, inflight: map[string]int{}}
}

func (h *eventHub) subscribe(ctx context.Context, buffer int) (*Subscription, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errRuntimeClosed()
	}
	if h.watch == nil {
		if err := h.startLocked(ctx); err != nil {
			return nil, fmt.Errorf("events: %w", errclass.Ensure(err))
		}
	}
	s := &Subscription{h: h, ch: make(chan Event, buffer)}
	h.subs[s] = struct{}{}
	s.stop = context.AfterFunc(ctx, func() { h.end(s, ctx.Err()) })
	return s, nil
}

// startLocked starts watching: the backend's stream, or a listing of the
// containers where they stand now, then the hub's own watch. The hub stays
// locked meanwhile, so that no event falls between the two; the first
// subscriber's ctx bounds how long.
func (h *eventHub) startLocked(sctx context.Context) error {
	ctx, cancel := context.WithCancel(context.Background())
	w := &eventWatch{ctx: ctx, cancel: cancel, known: map[string]*tracked{}}
	stop := context.AfterFunc(sctx, cancel)
	err := h.watchLocked(w)
	if !stop() && err == nil {
		err = sctx.Err() // the watch's context is ending with it
	}
	if err != nil {
		cancel()
		if h.watch == w {
			h.watch = nil
		}
	}
	return err
}

// watchLocked makes w the hub's watch and starts it.
func (h *eventHub) watchLocked(w *eventWatch) error {
	ctx := w.ctx
	if h.source != nil {
		done, err := h.source.Events(ctx, func(ev driver.Event) {
			h.mu.Lock()
			defer h.mu.Unlock()
			if h.watch == w {
				h.publishLocked(w, ev)
			}
		})
		if err != nil {
			return err
		}
		h.watch = w
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.sourceEnded(w, <-done)
		}()
		return nil
	}
	list, err := h.d.List(ctx)
	if err != nil {
		return err
	}
	h.watch = w
	for _, info := range list {
		if info.Status == StatusUnknown {
			continue // a create under way: the next listing tells
		}
		t := &tracked{status: info.Status, pending: h.inflight[info.ID] > 0}
		w.known[info.ID] = t
		h.waitExitLocked(w, info.ID, t)
	}
	h.wg.Add(1)
	go h.rescan(w)
	return nil
}

// sourceEnded ends every subscription when the backend's stream fails.
func (h *eventHub) sourceEnded(w *eventWatch, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.watch != w {
		return // stopped: nobody listens any more
	}
	if err == nil || errdefs.IsCanceled(err) {
		err = errdefs.ErrUnavailable.WithMessage("the engine's event stream ended")
	}
	err = fmt.Errorf("events: %w", errclass.Ensure(err))
	for s := range h.subs {
		h.endLocked(s, err)
	}
}

// end ends a subscription with err, once.
func (h *eventHub) end(s *Subscription, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.endLocked(s, err)
}

func (h *eventHub) endLocked(s *Subscription, err error) {
	if _, ok := h.subs[s]; !ok {
		return
	}
	delete(h.subs, s)
	s.err = err
	close(s.ch)
	s.stop()
	if len(h.subs) == 0 && h.watch != nil {
		h.watch.cancel()
		h.watch = nil
	}
}

// close ends every subscription and waits until nothing of the watches
// runs any more.
func (h *eventHub) close() {
	h.mu.Lock()
	h.closed = true
	for s := range h.subs {
		h.endLocked(s, errRuntimeClosed())
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// statusAfter is a container's state after each event.
var statusAfter = map[EventType]Status{
	EventCreated: StatusCreated,
	EventStarted: StatusRunning,
	EventPaused:  StatusPaused,
	EventResumed: StatusRunning,
	EventStopped: StatusStopped,
	EventDeleted: "",
}

// publishLocked reports ev to every subscriber, unless it repeats where
// the container already stands. A subscriber whose buffer is full loses
// its subscription rather than hold up the others and the runtime.
func (h *eventHub) publishLocked(w *eventWatch, ev driver.Event) {
	after := statusAfter[ev.Type]
	t := w.known[ev.ID]
	if t != nil && t.status == after && !t.pending {
		return // told already (an exit both waited for and listed)
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	if t != nil && ev.Time.Before(t.time) {
		// An exit recorded before the start that caused it returned:
		// a container's events never go back in time.
		ev.Time = t.time
	}
	w.seq++
	if ev.Type == EventDeleted {
		delete(w.known, ev.ID)
	} else {
		if t == nil {
			t = &tracked{}
			w.known[ev.ID] = t
		}
		t.status, t.seq, t.time, t.pending = after, w.seq, ev.Time, false
	}
	ev.Status = after
	for s := range h.subs {
		out := ev
		if ev.Exit != nil {
			exit := *ev.Exit
			out.Exit = &exit // each subscriber's own
		}
		select {
		case s.ch <- out:
		default:
			h.endLocked(s, fmt.Errorf("events: the subscriber fell more than %d events behind: %w", cap(s.ch), errdefs.ErrResourceExhausted))
		}
	}
	if t != nil {
		h.waitExitLocked(w, ev.ID, t)
	}
}

// waitExitLocked waits, in a goroutine of the watch, for the exit of a
// running or paused container of a backend without events of its own, and
// reports it. A wait that fails is tried again at the next listing.
func (h *eventHub) waitExitLocked(w *eventWatch, id string, t *tracked) {
	if h.source != nil || h.watch != w || t.waiting || (t.status != StatusRunning && t.status != StatusPaused) {
		return
	}
	t.waiting = true
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		es, err := h.d.Wait(w.ctx, id)
		h.mu.Lock()
		defer h.mu.Unlock()
		t.waiting = false
		if err != nil || h.watch != w || w.known[id] != t {
			return // stopped watching, or the container is gone
		}
		h.publishLocked(w, driver.Event{Type: EventStopped, ID: id, Time: es.ExitedAt, Exit: &es})
	}()
}

// rescan lists the containers every rescanInterval while w runs and
// reports what changed.
func (h *eventHub) rescan(w *eventWatch) {
	defer h.wg.Done()
	tick := time.NewTicker(rescanInterval)
	defer tick.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-tick.C:
		}
		h.mu.Lock()
		since := w.seq
		h.mu.Unlock()
		list, err := h.d.List(w.ctx)
		if err != nil {
			continue // the next listing tells
		}
		h.mu.Lock()
		if h.watch == w {
			h.compareLocked(w, since, list)
		}
		h.mu.Unlock()
	}
}

// compareLocked reports the changes between what w knows and list, a
// listing that began when w's seq was since. A container with an event of
// its own since then, or an action of this runtime under way, is left
// alone: the listing may be older than what is known.
func (h *eventHub) compareLocked(w *eventWatch, since uint64, list []*Info) {
	listed := make(map[string]bool, len(list))
	unsettled := map[string]bool{}
	defer func() { w.unsettled = unsettled }()
	for _, info := range list {
		listed[info.ID] = true
		t := w.known[info.ID]
		if h.inflight[info.ID] > 0 || (t != nil && t.seq > since) || info.Status == StatusUnknown {
			continue
		}
		if info.Status == StatusStopped && info.Exit == nil && (t == nil || t.status != StatusStopped) {
			// Stopped with no exit recorded: the wait under way
			// reports it with the exit; without one, it is reported at
			// the next listing that shows it so again. An engine may
			// show a container another process is starting as stopped
			// for an instant (its init's leader thread is a zombie
			// while it executes the program), and the exit of one
			// that did stop may not be written yet.
			if (t != nil && t.waiting) || !w.unsettled[info.ID] {
				unsettled[info.ID] = true
				continue
			}
		}
		var from Status
		if t != nil {
			from = t.status
		}
		for _, typ := range transitions(from, info.Status) {
			ev := driver.Event{Type: typ, ID: info.ID}
			switch {
			case typ == EventCreated:
				ev.Time = info.CreatedAt
			case typ == EventStopped && info.Exit != nil:
				exit := *info.Exit
				ev.Exit, ev.Time = &exit, exit.ExitedAt
			}
			h.publishLocked(w, ev)
		}
		if t := w.known[info.ID]; t != nil {
			h.waitExitLocked(w, info.ID, t) // again, if a wait failed
		}
	}
	for id, t := range w.known {
		if !listed[id] && h.inflight[id] == 0 && t.seq <= since {
			h.publishLocked(w, driver.Event{Type: EventDeleted, ID: id})
		}
	}
}

// transitions are the events that lead from one state to another, from
// "" for a container not seen before.
func transitions(from, to Status) []EventType {
	if from == to {
		return nil
	}
	var out []EventType
	if from == "" {
		out = append(out, EventCreated)
		from = StatusCreated
	}
	switch to {
	case StatusRunning:
		if from == StatusPaused {
			return append(out, EventResumed)
		}
		return append(out, EventStarted)
	case StatusPaused:
		if from != StatusRunning {
			out = append(out, EventStarted)
		}
		return append(out, EventPaused)
	case StatusStopped:
		return append(out, EventStopped)
	}
	return out
}

// begin marks an action of this runtime on container id as under way;
// done ends it.
func (h *eventHub) begin(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.inflight[id]++
}

// done ends an action begin marked, and reports its events (none when it
// failed) unless the backend reports them itself.
func (h *eventHub) done(id string, evs ...driver.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.inflight[id]--; h.inflight[id] <= 0 {
		delete(h.inflight, id)
	}
	if h.source != nil || h.watch == nil {
		return
	}
	for _, ev := range evs {
		h.publishLocked(h.watch, ev)
		if h.watch == nil {
			return // the last subscriber fell behind
		}
	}
}

// report reports the events of an action of this runtime on container id
// that is still under way, unless the backend reports them itself.
func (h *eventHub) report(id string, evs ...driver.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.source != nil {
		return
	}
	for _, ev := range evs {
		if h.watch == nil {
			return // no subscriber, or the last one fell behind
		}
		h.publishLocked(h.watch, ev)
	}
}

// act runs op, an action of this runtime on container id, and reports it
// as an event of type typ when it succeeds.
func (h *eventHub) act(id string, typ EventType, op func() error) error {
	h.begin(id)
	if err := op(); err != nil {
		h.done(id)
		return err
	}
	h.done(id, driver.Event{Type: typ, ID: id})
	return nil
}
