package docker

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"

	"github.com/berthrun/berth/runtime/driver"
)

var _ driver.EventSource = (*Runtime)(nil)

// eventActions are the daemon's container events berth reports, and
// "oom", which marks the exit that follows.
var eventActions = map[events.Action]driver.EventType{
	events.ActionCreate:  driver.EventCreated,
	events.ActionStart:   driver.EventStarted,
	events.ActionPause:   driver.EventPaused,
	events.ActionUnPause: driver.EventResumed,
	events.ActionDie:     driver.EventStopped,
	events.ActionDestroy: driver.EventDeleted,
	events.ActionOOM:     "",
}

// Events implements driver.EventSource (Capabilities.Events): the daemon's
// own events for the containers of the runtime's scope, from its /events
// stream filtered by berth's labels, whoever acted on them (this process,
// another, docker's CLI), stamped with the daemon's times. A stopped
// event carries the exit code ("die"), read as Wait reads it, and
// OOMKilled when the daemon reported an OOM kill in the container since it
// started. The freeze of a running container's Snapshot shows as paused
// then resumed: it is Docker's pause.
//
// The daemon answers before Events returns, so nothing after is missed. A
// broken stream (a restart of the daemon) is opened again, for up to
// reconnectTimeout, from the time of the last event: the daemon replays
// what it still holds of its recent events, and berth drops those it
// passed already.
func (r *Runtime) Events(ctx context.Context, send func(driver.Event)) (<-chan error, error) {
	ctx, cancel := context.WithCancel(ctx)
	f := &eventFollower{r: r, send: send, oom: map[string]bool{}, atLast: map[string]bool{}}
	res := r.eng.Events(ctx, f.options())
	select {
	case err := <-res.Err:
		cancel()
		return nil, fmt.Errorf("event stream: %w", classify(err))
	default:
	}
	done := make(chan error, 1)
	go func() {
		defer close(done)
		defer cancel()
		done <- f.follow(ctx, res)
	}()
	return done, nil
}

// eventFollower turns the daemon's event stream into berth's events.
type eventFollower struct {
	r    *Runtime
	send func(driver.Event)
	// oom marks the containers the daemon reported an OOM kill in since
	// they last started.
	oom map[string]bool
	// last is the time of the last event passed, and atLast the events
	// passed at that very time: a stream opened again from last replays
	// them.
	last   int64
	atLast map[string]bool
}

// options asks for the container events berth reports, of the runtime's
// scope, since the last event passed if any.
func (f *eventFollower) options() client.EventsListOptions {
	filters := client.Filters{}.
		Add("type", string(events.ContainerEventType)).
		Add("label", LabelMarker+"=1", LabelScope+"="+f.r.scope)
	for a := range eventActions {
		filters.Add("event", string(a))
	}
	o := client.EventsListOptions{Filters: filters}
	if f.last > 0 {
		o.Since = fmt.Sprintf("%d.%09d", f.last/1e9, f.last%1e9)
	}
	return o
}

// follow passes the stream's events on until ctx ends or the daemon stays
// unreachable for reconnectTimeout.
func (f *eventFollower) follow(ctx context.Context, res client.EventsResult) error {
	var outage time.Time
	delay := 50 * time.Millisecond
	for {
		opened := time.Now()
		passed, err := f.pump(ctx, res)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		// A stream that carried events, or lasted, was up: the daemon
		// went away only now.
		if passed || time.Since(opened) > time.Second {
			outage, delay = time.Time{}, 50*time.Millisecond
		}
		if outage.IsZero() {
			outage = time.Now()
		} else if time.Since(outage) > reconnectTimeout {
			return fmt.Errorf("event stream: daemon unreachable for %s: %w", reconnectTimeout, classify(err))
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
		delay = min(2*delay, time.Second)
		res = f.r.eng.Events(ctx, f.options())
	}
}

// pump passes the events of one stream until it breaks, and reports
// whether it passed any.
func (f *eventFollower) pump(ctx context.Context, res client.EventsResult) (bool, error) {
	passed := false
	for {
		select {
		case m := <-res.Messages:
			if f.handle(m) {
				passed = true
			}
		case err := <-res.Err:
			return passed, err
		case <-ctx.Done():
			return passed, ctx.Err()
		}
	}
}

// handle passes one message of the daemon on, unless it is not one of
// berth's events or was passed already; it reports whether it passed it.
func (f *eventFollower) handle(m events.Message) bool {
	at := m.TimeNano
	if at == 0 {
		at = m.Time * 1e9
	}
	key := m.Actor.ID + " " + string(m.Action)
	if at < f.last || (at == f.last && f.atLast[key]) {
		return false // replayed after a reconnect
	}
	if at > f.last {
		f.last, f.atLast = at, map[string]bool{}
	}
	f.atLast[key] = true

	typ, ok := eventActions[m.Action]
	id := m.Actor.Attributes[LabelID]
	if !ok || m.Type != events.ContainerEventType || !ours(m.Actor.Attributes, id, f.r.scope) {
		return false
	}
	ev := driver.Event{Type: typ, ID: id, Time: time.Unix(0, at).UTC()}
	switch m.Action {
	case events.ActionOOM:
		f.oom[id] = true
		return false
	case events.ActionStart, events.ActionDestroy:
		delete(f.oom, id)
	case events.ActionDie:
		if code, err := strconv.Atoi(m.Actor.Attributes["exitCode"]); err == nil {
			st := exitStatus(code, ev.Time)
			st.OOMKilled = f.oom[id]
			ev.Exit = &st
		}
		delete(f.oom, id)
	}
	f.send(ev)
	return true
}
