package libcontainer

import (
	"context"
	"fmt"
	"io"
	"os"

	lc "github.com/opencontainers/runc/libcontainer"

	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/internal/tarutil"
)

// Snapshot implements driver.Snapshotter: the container is frozen while its
// root filesystem is archived, so the archive is one instant of it.
func (r *Runtime) Snapshot(ctx context.Context, id string, w io.Writer) error {
	rec, err := r.readRecord(id)
	if err != nil {
		return err
	}
	return r.frozen(id, func() error {
		if rec.ImageTree == "" {
			// The source tree, not the ID-mapped view: the archive keeps
			// the owners as the container sees them.
			return tarutil.WriteDir(w, rec.Spec.Root.Path)
		}
		view, err := os.MkdirTemp(r.dir(id), "snapshot-")
		if err != nil {
			return err
		}
		defer os.Remove(view)
		if err := snapshotOverlayView(r.dir(id), rec.ImageTree, view); err != nil {
			return err
		}
		defer func() { _ = fsutil.Unmount(view) }()
		return tarutil.WriteDir(w, view)
	})
}

// frozen runs fn with the container paused if it runs, and thaws it after.
func (r *Runtime) frozen(id string, fn func() error) error {
	c, err := r.loadContainer(id)
	if err != nil {
		return fn() // never started, or destroyed: nothing runs
	}
	st, err := c.Status()
	if err != nil {
		return classify(err)
	}
	if st == lc.Running {
		if err := c.Pause(); err != nil {
			return fmt.Errorf("freeze: %w", classify(err))
		}
		defer func() { _ = c.Resume() }()
	}
	return fn()
}
