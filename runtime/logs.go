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

// ReopenLog closes the container's CRI log file (Config.CRILog) and opens
// its path again, as the CRI's ReopenContainerLog asks: the kubelet
// renames the file to rotate it, then calls this, and the container's next
// output goes to a new file at the path, created (mode 0640) if needed.
// It returns once the new file is open, and it works from any process on
// the same state, whichever created the container. The container must be
// running (or paused: its output is still copied); otherwise, and for a
// container created without a CRI log, it is failed-precondition. When the
// path cannot be opened (a file planted there, say) the error is returned
// and the output goes on to the old file. Backends without
// Capabilities.CRILog answer not-implemented.
func (c *Container) ReopenLog(ctx context.Context) error {
	if err := c.capable("reopen log", c.r.crilog != nil); err != nil {
		return err
	}
	if _, err := c.require(ctx, "reopen the log of", StatusRunning, StatusPaused); err != nil {
		return err
	}
	return wrap(c.id, c.r.crilog.ReopenCRILog(ctx, c.id))
}
