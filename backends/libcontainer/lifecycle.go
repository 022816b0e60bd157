package libcontainer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	lc "github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/internal/phase"
	"github.com/berthrun/berth/internal/reap"
	"github.com/berthrun/berth/runtime/driver"
)

// Start implements driver.Runtime.
func (r *Runtime) Start(ctx context.Context, id string) error {
	sp := phase.Begin(ctx)
	c, err := r.load(id)
	if err != nil {
		return err
	}
	sp.Mark("start.load")
	err = c.Exec()
	sp.Mark("start.exec")
	return classify(err)
}

// Wait implements driver.Runtime.
func (r *Runtime) Wait(ctx context.Context, id string) (driver.ExitStatus, error) {
	sp := phase.Begin(ctx)
	rec, err := r.readRecord(id)
	if err != nil {
		return driver.ExitStatus{}, err
	}
	r.mu.Lock()
	wg, exited := r.copies[id], r.exited[id]
	r.mu.Unlock()
	if exited != nil {
		select {
		case <-exited:
		case <-ctx.Done():
			return driver.ExitStatus{}, ctx.Err()
		}
	} else if err := r.waitMonitor(ctx, id, rec); err != nil {
		return driver.ExitStatus{}, err
	}
	sp.Mark("wait.exit")
	if err := r.waitOrphan(ctx, id); err != nil {
		return driver.ExitStatus{}, err
	}
	if wg != nil {
		copied := make(chan struct{})
		go func() { wg.Wait(); close(copied) }()
		select {
		case <-copied:
		case <-ctx.Done():
			return driver.ExitStatus{}, ctx.Err()
		}
	}
	st, err := r.readExit(id)
	if err != nil {
		return driver.ExitStatus{}, err
	}
	sp.Mark("wait.read")
	return *st, nil
}

// waitOrphan waits for an init whose monitor or owner died before it: no
// exit will be recorded, so follow the init itself.
func (r *Runtime) waitOrphan(ctx context.Context, id string) error {
	if _, err := os.Stat(filepath.Join(r.dir(id), exitFile)); err == nil {
		return nil
	}
	c, err := r.loadContainer(id)
	if err != nil {
		return nil // never started, or destroyed: nothing runs
	}
	state, err := c.State()
	if err != nil || state.InitProcessPid <= 0 {
		return nil
	}
	pidfd, err := unix.PidfdOpen(state.InitProcessPid, 0)
	if err != nil {
		return nil // gone already
	}
	defer unix.Close(pidfd)
	// Status checks the pid's start time: if it still reports a live init
	// after the pidfd was opened, the pidfd is the init's, not a reuse.
	if st, err := c.Status(); err != nil || st == lc.Stopped {
		return nil
	}
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := unix.Poll(fds, 100)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll init: %w", err)
		}
		if n > 0 {
			return nil
		}
	}
}

func (r *Runtime) readExit(id string) (*driver.ExitStatus, error) {
	var st driver.ExitStatus
	err := fsutil.ReadJSON(filepath.Join(r.dir(id), exitFile), &st)
	if errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(r.dir(id)); errors.Is(err, os.ErrNotExist) {
			// Deleted while this waited.
			return nil, fmt.Errorf("no such container: %w", errdefs.ErrNotFound)
		}
		// The monitor died before the container's init (it was killed):
		// the exit code is lost.
		return &driver.ExitStatus{Code: -1, ExitedAt: time.Now().UTC()}, nil
	}
	if err != nil {
		return nil, err
	}
	return &st, nil
}

// Kill implements driver.Runtime. libcontainer refuses to signal an init
// whose main thread ended alone while its other threads run on (see
// leftInit): berth signals what is left of it itself.
func (r *Runtime) Kill(ctx context.Context, id string, sig syscall.Signal) error {
	c, err := r.load(id)
	if err != nil {
		return err
	}
	err = c.Signal(sig)
	if errors.Is(err, lc.ErrNotRunning) {
		if pid, start, ok := leftInit(c); ok {
			if err := signalLeftInit(pid, start, sig); err != nil || sig != syscall.SIGKILL {
				return err
			}
			// As libcontainer does for SIGKILL: a frozen process dies
			// only once thawed (a pause may have caught the threads as
			// their leader ended).
			if st, err := c.Status(); err == nil && st == lc.Paused {
				return classify(c.Resume())
			}
			return nil
		}
	}
	return classify(err)
}

// leftInit returns the pid and start time of the container's init when
// libcontainer takes the container for stopped but it is not: the init's
// main thread ended alone, a zombie, while its other threads run on (a
// tenant's process can do that). runc takes a zombie init for gone; the
// thread group lives on, in the container's cgroup and namespaces, and
// the monitor waits for it. The process is the init libcontainer
// recorded (same start time).
func leftInit(c *lc.Container) (int, uint64, bool) {
	s, err := c.State()
	if err != nil || s.InitProcessPid <= 0 {
		return 0, 0, false
	}
	pid, start := s.InitProcessPid, s.InitProcessStartTime
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	f, err := reap.StatFields(b)
	if err != nil || string(f[0]) != "Z" {
		return 0, 0, false
	}
	if st, err := statStartTime(b); err != nil || st != start {
		return 0, 0, false
	}
	// A zombie whose threads all ended has only its leader left.
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	return pid, start, err == nil && len(tasks) > 1
}

// signalLeftInit sends sig to what is left of an init (leftInit): a
// signal to the leader's pid reaches its whole thread group. The pidfd is
// opened first and the start time checked after, so a reused pid is never
// signalled.
func signalLeftInit(pid int, start uint64, sig syscall.Signal) error {
	err := reap.Signal(pid, sig, func() error {
		if st, err := procStartTime(pid); err != nil || st != start {
			return reap.ErrGone
		}
		return nil
	})
	if errors.Is(err, reap.ErrGone) {
		return fmt.Errorf("the container's init has exited: %w", errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", err, errdefs.ErrUnknown)
	}
	return nil
}

// Delete implements driver.Runtime.
func (r *Runtime) Delete(ctx context.Context, id string) error {
	sp := phase.Begin(ctx)
	rec, err := r.readRecord(id)
	if err != nil {
		return err
	}
	if c, err := r.loadContainer(id); err == nil {
		st, err := c.Status()
		if err != nil {
			return classify(err)
		}
		sp.Mark("delete.engine-state")
		switch st {
		case lc.Running, lc.Paused:
			return fmt.Errorf("container is %s: %w", st, errdefs.ErrFailedPrecondition)
		case lc.Created:
			// The init waits on its exec fifo; end it and let the monitor
			// record that before the cgroup goes.
			_ = c.Signal(unix.SIGKILL)
			if err := r.waitMonitor(ctx, id, rec); err != nil {
				return err
			}
		}
		sp.Skip()
		if err := killRemaining(ctx, c); err != nil {
			return err
		}
		sp.Mark("delete.kill-remaining")
		if err := c.Destroy(); err != nil {
			return classify(err)
		}
		sp.Mark("delete.destroy")
	}
	// The monitor exits once the init is gone; let it write its record
	// before the directory goes.
	if err := r.waitMonitor(ctx, id, rec); err != nil {
		return err
	}
	sp.Mark("delete.wait-monitor")
	err = r.cleanup(id, rec)
	sp.Mark("delete.cleanup")
	return err
}

// cleanup removes what Create made, in reverse: libcontainer's state, the
// root filesystem mount, the directory. It tolerates any of them missing,
// so it also finishes a create that crashed half-way.
func (r *Runtime) cleanup(id string, rec *record) error {
	if c, err := r.loadContainer(id); err == nil {
		_ = c.Signal(unix.SIGKILL)
		_ = killRemaining(context.Background(), c)
		_ = c.Destroy()
	} else if rec.CgroupsPath != "" {
		if err := destroyCgroups(rec.CgroupsPath); err != nil {
			return fmt.Errorf("remove cgroups %s: %w", rec.CgroupsPath, classify(err))
		}
	}
	_ = os.RemoveAll(filepath.Join(r.runcRoot(), id))
	if rec.IDMapped {
		if err := fsutil.Unmount(rec.Rootfs); err != nil {
			return fmt.Errorf("unmount root filesystem: %w", err)
		}
	}
	if rec.ImageTree != "" {
		if err := unmountImageRootfs(r.dir(id)); err != nil {
			return err
		}
	}
	r.mu.Lock()
	delete(r.copies, id)
	delete(r.exited, id)
	r.mu.Unlock()
	return os.RemoveAll(r.dir(id))
}

// Pause implements driver.Runtime.
func (r *Runtime) Pause(ctx context.Context, id string) error {
	c, err := r.load(id)
	if err != nil {
		return err
	}
	return classify(c.Pause())
}

// Resume implements driver.Runtime.
func (r *Runtime) Resume(ctx context.Context, id string) error {
	c, err := r.load(id)
	if err != nil {
		return err
	}
	return classify(c.Resume())
}

// Update implements driver.Updater.
func (r *Runtime) Update(ctx context.Context, id string, res *driver.Resources) error {
	c, err := r.load(id)
	if err != nil {
		return err
	}
	cfg := c.Config()
	cg := *cfg.Cgroups
	rs := *cg.Resources
	if res.MemoryLimit != nil {
		rs.Memory = *res.MemoryLimit
	}
	if res.CPUShares != nil {
		rs.CpuShares = *res.CPUShares
	}
	if res.CPUQuota != nil {
		rs.CpuQuota = *res.CPUQuota
	}
	if res.CPUPeriod != nil {
		rs.CpuPeriod = *res.CPUPeriod
	}
	if res.PidsLimit != nil {
		rs.PidsLimit = res.PidsLimit
	}
	cg.Resources = &rs
	cfg.Cgroups = &cg
	return classify(c.Set(cfg))
}

// killRemaining kills whatever is left in the container's cgroup once its
// init is gone. libcontainer takes a container whose init's main thread
// has exited for stopped even while the init's other threads live on (a
// tenant's process can end its leader thread alone), then cannot remove
// its cgroup: the container could never be deleted.
func killRemaining(ctx context.Context, c *lc.Container) error {
	return reap.KillAll(ctx, c.Processes)
}

// destroyCgroups kills what is left in the cgroup at path, in every
// hierarchy, and removes it: a container's whose libcontainer state is
// gone. A cgroup that does not exist is no error.
func destroyCgroups(path string) error {
	m, err := manager.New(&cgroups.Cgroup{Path: path, Resources: &cgroups.Resources{}})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := reap.KillAll(ctx, m.GetAllPids); err != nil {
		return err
	}
	return m.Destroy()
}
