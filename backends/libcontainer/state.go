package libcontainer

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/containerd/errdefs"
	lc "github.com/opencontainers/runc/libcontainer"

	"github.com/berthrun/berth/runtime/driver"
)

// State implements driver.Runtime.
func (r *Runtime) State(ctx context.Context, id string) (*driver.Info, error) {
	rec, err := r.readRecord(id)
	if err != nil {
		return nil, err
	}
	info := &driver.Info{ID: id, CreatedAt: rec.CreatedAt, Labels: rec.Labels, Spec: rec.Spec, Status: driver.StatusUnknown}
	c, err := r.loadContainer(id)
	switch {
	case err == nil:
		st, err := c.Status()
		if err != nil {
			return nil, classify(err)
		}
		info.Status = map[lc.Status]driver.Status{
			lc.Created: driver.StatusCreated, lc.Running: driver.StatusRunning,
			lc.Paused: driver.StatusPaused, lc.Stopped: driver.StatusStopped,
		}[st]
		if st != lc.Stopped {
			if s, err := c.State(); err == nil {
				info.Pid = s.InitProcessPid
			}
		} else if pid, _, ok := leftInit(c); ok {
			// Not stopped: the init's threads run on.
			info.Status, info.Pid = driver.StatusRunning, pid
		}
	case errors.Is(err, lc.ErrNotExist) || errors.Is(err, os.ErrNotExist):
		// No engine state: a create in progress or one that crashed.
		if !r.monitorAlive(id) {
			info.Status = driver.StatusStopped
		}
	default:
		return nil, classify(err)
	}
	if info.Status == driver.StatusStopped {
		if st, err := r.readExit(id); err == nil && st.Code != -1 {
			info.Exit = st
		}
	}
	return info, nil
}

// List implements driver.Runtime.
func (r *Runtime) List(ctx context.Context) ([]*driver.Info, error) {
	ents, err := os.ReadDir(r.containersDir())
	if err != nil {
		return nil, err
	}
	var out []*driver.Info
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		info, err := r.State(ctx, e.Name())
		if errdefs.IsNotFound(err) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("container %q: %w", e.Name(), err)
		}
		out = append(out, info)
	}
	return out, nil
}
