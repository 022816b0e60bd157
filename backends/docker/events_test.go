package docker

import (
	"context"
	"fmt"
	"io"
	"maps"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/api/types/events"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/runtime/driver"
)

// The daemon's events become berth's: only the scope's containers, the
// exit code read as Wait reads it, an OOM kill flagged on the exit that
// follows. A broken stream is opened again from the last event's time, and
// what the daemon replays is not passed twice.
func TestEventsFromTheDaemon(t *testing.T) {
	f := newFake()
	r := openFake(t, f, WithScope("s1"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan driver.Event, 16)
	done, err := r.Events(ctx, func(ev driver.Event) { got <- ev })
	require.NoError(t, err)

	s := f.stream(0)
	require.Empty(t, s.opts.Since)
	require.Equal(t, map[string]bool{LabelMarker + "=1": true, LabelScope + "=s1": true}, s.opts.Filters["label"])
	require.True(t, s.opts.Filters["event"]["die"])
	require.True(t, s.opts.Filters["type"]["container"])

	ours := map[string]string{LabelMarker: "1", LabelID: "web", LabelScope: "s1", "name": "web"}
	theirs := map[string]string{LabelMarker: "1", LabelID: "web", LabelScope: "s2", "name": "web"}
	base := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano()
	msg := func(a events.Action, at int64, labels map[string]string, extra ...string) events.Message {
		attrs := maps.Clone(labels)
		for i := 0; i+1 < len(extra); i += 2 {
			attrs[extra[i]] = extra[i+1]
		}
		return events.Message{Type: events.ContainerEventType, Action: a, Actor: events.Actor{ID: "d0c" + attrs[LabelScope], Attributes: attrs}, Time: at / 1e9, TimeNano: at}
	}
	next := func() driver.Event {
		t.Helper()
		select {
		case ev := <-got:
			return ev
		case <-time.After(10 * time.Second):
			t.Fatal("no event")
			return driver.Event{}
		}
	}

	s.msgs <- msg(events.ActionCreate, base, ours)
	s.msgs <- msg(events.ActionCreate, base+1, theirs)
	s.msgs <- msg(events.ActionStart, base+2, ours)
	s.msgs <- msg(events.ActionAttach, base+2, ours)
	s.msgs <- msg(events.ActionOOM, base+3, ours)
	s.msgs <- msg(events.ActionDie, base+4, ours, "exitCode", "137")
	require.Equal(t, driver.Event{Type: driver.EventCreated, ID: "web", Time: time.Unix(0, base).UTC()}, next())
	require.Equal(t, driver.EventStarted, next().Type)
	stopped := next()
	require.Equal(t, driver.EventStopped, stopped.Type)
	require.Equal(t, &driver.ExitStatus{Code: 137, Signal: syscall.SIGKILL, ExitedAt: time.Unix(0, base+4).UTC(), OOMKilled: true}, stopped.Exit)

	// The daemon restarts: the stream is opened again from the last
	// event, whose replay is dropped.
	s.errs <- io.ErrUnexpectedEOF
	s = f.stream(1)
	require.Equal(t, fmt.Sprintf("%d.%09d", (base+4)/1e9, (base+4)%1e9), s.opts.Since)
	s.msgs <- msg(events.ActionDie, base+4, ours, "exitCode", "137")
	s.msgs <- msg(events.ActionStart, base+5, ours)
	s.msgs <- msg(events.ActionDie, base+6, ours, "exitCode", "1")
	s.msgs <- msg(events.ActionDestroy, base+7, ours)
	require.Equal(t, driver.EventStarted, next().Type)
	stopped = next()
	require.Equal(t, &driver.ExitStatus{Code: 1, ExitedAt: time.Unix(0, base+6).UTC()}, stopped.Exit, "the OOM kill was the previous run's")
	require.Equal(t, driver.Event{Type: driver.EventDeleted, ID: "web", Time: time.Unix(0, base+7).UTC()}, next())
	select {
	case ev := <-got:
		t.Fatalf("unexpected %+v", ev)
	default:
	}

	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	_, open := <-done
	require.False(t, open, "closed once the watch is over")
}
