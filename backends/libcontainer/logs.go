package libcontainer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"

	"github.com/berthrun/berth/internal/logfile"
	"github.com/berthrun/berth/runtime/driver"
)

// Logs implements driver.Logger: the container's log, its rotated files
// first.
func (r *Runtime) Logs(ctx context.Context, id string) (io.ReadCloser, error) {
	if _, err := r.readRecord(id); err != nil {
		return nil, err
	}
	rc, err := logfile.Open(filepath.Join(r.dir(id), logFile))
	if errors.Is(err, os.ErrNotExist) {
		// A container of an older berth, whose output went to its
		// caller's writers alone.
		return nil, fmt.Errorf("no log kept for this container: %w", errdefs.ErrFailedPrecondition)
	}
	return rc, err
}

// FollowLogs implements driver.LogFollower: the log's files are read as
// they grow and rotate, until Wait says the container stopped and its
// output was copied (from any process on the same root).
func (r *Runtime) FollowLogs(ctx context.Context, id string, tail int, w io.Writer) error {
	if _, err := r.readRecord(id); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		// A failed Wait (the container was deleted meanwhile) ends
		// the follow as well.
		_, _ = r.Wait(ctx, id)
		close(done)
	}()
	err := logfile.Follow(ctx, filepath.Join(r.dir(id), logFile), tail, w, done)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no log kept for this container: %w", errdefs.ErrFailedPrecondition)
	}
	return err
}

// logLimits are the log's caps, the defaults where the request has none.
func logLimits(l driver.LogLimits) logfile.Limits {
	return logfile.Limits{MaxSize: l.MaxSize, MaxFiles: l.MaxFiles}.OrDefault()
}
