package runtime

import (
	"context"
	"io"

	"github.com/berthrun/berth/internal/logfile"
	"github.com/berthrun/berth/runtime/driver"
)

// Logs reads back the output kept for the container (with or without
// writers), its oldest kept output first; see Config.Log for its caps.
func (c *Container) Logs(ctx context.Context) (io.ReadCloser, error) {
	if err := c.capable("logs", c.r.logs != nil); err != nil {
		return nil, err
	}
	rc, err := c.r.logs.Logs(ctx, c.id)
	return rc, wrap(c.id, err)
}

// LogOptions tune WriteLogs.
type LogOptions struct {
	// Follow goes on writing what the container writes until it has
	// stopped and its output is copied (the backend must be a
	// driver.LogFollower, else not-implemented).
	Follow bool
	// Tail, when > 0, writes only the last Tail lines of the kept
	// output; when < 0, none of it (with Follow: only what comes next);
	// 0 writes all of it.
	Tail int
}

// WriteLogs writes the container's kept output to w, as opts ask. It ends
// with ctx, which is the way to stop following a container that runs on.
func (c *Container) WriteLogs(ctx context.Context, w io.Writer, opts LogOptions) error {
	if err := c.capable("logs", c.r.logs != nil); err != nil {
		return err
	}
	tail := opts.Tail
	switch {
	case tail == 0:
		tail = -1
	case tail < 0:
		tail = 0
	}
	if opts.Follow {
		f, ok := c.r.d.(driver.LogFollower)
		if !ok {
			return c.capable("follow logs", false)
		}
		return wrap(c.id, f.FollowLogs(ctx, c.id, tail, w))
	}
	rc, err := c.r.logs.Logs(ctx, c.id)
	if err != nil {
		return wrap(c.id, err)
	}
	defer rc.Close()
	return wrap(c.id, logfile.Tail(rc, tail, w))
}
