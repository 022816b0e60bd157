package main

import (
	"context"
	"flag"
	"fmt"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/runtime"
)

// cmdEvents prints the containers' events, one line each, until SIGINT or
// SIGTERM (exit 0) or the subscription fails.
func (a *app) cmdEvents(fs *flag.FlagSet, args []string) (int, error) {
	if err := a.parseN(fs, args, 0); err != nil {
		return 0, err
	}
	rt, err := a.runtime()
	if err != nil {
		return 0, err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	sub, err := rt.Events(ctx, runtime.EventsOptions{})
	if err != nil {
		return 0, err
	}
	defer sub.Close()
	for ev := range sub.Events() {
		if _, err := fmt.Fprintln(a.stdout, eventLine(ev)); err != nil {
			return 0, err
		}
	}
	if err := sub.Err(); err != nil && ctx.Err() == nil {
		return 0, err
	}
	return 0, nil
}

// eventLine is an event as events prints it: its time (RFC 3339, UTC,
// nanoseconds), its type and the container's ID, then for a stopped
// container what is known of its exit.
func eventLine(ev runtime.Event) string {
	f := []string{ev.Time.UTC().Format(time.RFC3339Nano), string(ev.Type), ev.ID}
	if x := ev.Exit; x != nil {
		f = append(f, fmt.Sprintf("exit=%d", x.Code))
		if x.Signal != 0 {
			f = append(f, "signal="+unix.SignalName(x.Signal))
		}
		if x.OOMKilled {
			f = append(f, "oom-killed")
		}
	}
	return strings.Join(f, " ")
}
