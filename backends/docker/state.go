package docker

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/berthrun/berth/runtime/driver"
)

// exitOf returns the exit of a stopped container.
func exitOf(c *container.InspectResponse) (driver.ExitStatus, bool) {
	if c.State == nil || statusOf(c.State.Status) != driver.StatusStopped {
		return driver.ExitStatus{}, false
	}
	at, _ := time.Parse(time.RFC3339Nano, c.State.FinishedAt)
	st := exitStatus(c.State.ExitCode, at.UTC())
	st.OOMKilled = c.State.OOMKilled
	return st, true
}

// exitStatus reads Docker's exit code as a shell does: Docker reports
// 128+N for a process killed by signal N, and nothing else, so a process
// that exits 137 by itself looks killed by SIGKILL.
func exitStatus(code int, at time.Time) driver.ExitStatus {
	st := driver.ExitStatus{Code: code, ExitedAt: at}
	if code > 128 && code <= 128+64 {
		st.Signal = syscall.Signal(code - 128)
	}
	return st
}

// statuses maps Docker's container states to berth's. Berth sets no
// restart policy, so "restarting" is a daemon acting on its own.
var statuses = map[container.ContainerState]driver.Status{
	container.StateCreated:    driver.StatusCreated,
	container.StateRunning:    driver.StatusRunning,
	container.StatePaused:     driver.StatusPaused,
	container.StateRestarting: driver.StatusRunning,
	container.StateRemoving:   driver.StatusStopped,
	container.StateExited:     driver.StatusStopped,
	container.StateDead:       driver.StatusStopped,
}

func statusOf(s container.ContainerState) driver.Status {
	if st, ok := statuses[s]; ok {
		return st
	}
	return driver.StatusUnknown
}

// State implements driver.Runtime.
func (r *Runtime) State(ctx context.Context, id string) (*driver.Info, error) {
	c, err := r.inspect(ctx, id)
	if err != nil {
		return nil, err
	}
	return infoOf(id, c)
}

func infoOf(id string, c *container.InspectResponse) (*driver.Info, error) {
	rec, err := readRecord(c.Config.Labels)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrDataLoss)
	}
	info := &driver.Info{ID: id, Status: driver.StatusUnknown, Labels: rec.Labels, Spec: rec.Spec}
	info.CreatedAt, _ = time.Parse(time.RFC3339Nano, c.Created)
	info.CreatedAt = info.CreatedAt.UTC()
	if c.State != nil {
		info.Status = statusOf(c.State.Status)
		if info.Status == driver.StatusRunning || info.Status == driver.StatusPaused {
			info.Pid = c.State.Pid
		}
	}
	if st, ok := exitOf(c); ok {
		info.Exit = &st
	}
	return info, nil
}

// List implements driver.Runtime.
func (r *Runtime) List(ctx context.Context) ([]*driver.Info, error) {
	f := client.Filters{}.Add("label", LabelMarker+"=1", LabelScope+"="+r.scope)
	res, err := r.eng.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, classify(err)
	}
	var out []*driver.Info
	for _, s := range res.Items {
		id := s.Labels[LabelID]
		if !ours(s.Labels, id, r.scope) {
			continue
		}
		r.remember(id, s.ID)
		info, err := r.State(ctx, id)
		if errdefs.IsNotFound(err) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("container %q: %w", id, err)
		}
		out = append(out, info)
	}
	return out, nil
}
