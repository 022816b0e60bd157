package docker

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/berthrun/berth/internal/reap"
	"github.com/berthrun/berth/runtime/driver"
)

// Start implements driver.Runtime, and sizes the init's terminal.
func (r *Runtime) Start(ctx context.Context, id string) error {
	var dockerID string
	err := r.do(ctx, id, func(did string) error {
		dockerID = did
		_, err := r.eng.ContainerStart(ctx, did, client.ContainerStartOptions{})
		return err
	})
	if err != nil {
		return err
	}
	return r.sizeTerminal(ctx, dockerID)
}

// Kill implements driver.Runtime. Docker resumes a paused container to
// deliver any signal but SIGKILL: berth refuses those instead of changing
// the container's state behind the caller's back.
func (r *Runtime) Kill(ctx context.Context, id string, sig syscall.Signal) error {
	if sig != syscall.SIGKILL {
		c, err := r.inspect(ctx, id)
		if err != nil {
			return err
		}
		if c.State != nil && c.State.Status == container.StatePaused {
			return fmt.Errorf("Docker would resume the paused container to deliver signal %d: %w", sig, errdefs.ErrFailedPrecondition)
		}
		if r.local {
			return classify(signalInit(c, sig))
		}
	}
	return r.do(ctx, id, func(did string) error {
		if sig != syscall.SIGKILL {
			_, err := r.eng.ContainerKill(ctx, did, client.ContainerKillOptions{Signal: fmt.Sprint(int(sig))})
			return err
		}
		err := r.sigkill(ctx, did)
		if err == nil {
			return nil
		}
		// Docker refuses to kill a container whose init ended its leader
		// thread alone ("PID ... is zombie and can not be killed") while
		// its other threads run on: berth kills them through the cgroup.
		if killLeftInCgroup(ctx, did) != nil {
			return err
		}
		if c, ierr := r.eng.ContainerInspect(ctx, did, client.ContainerInspectOptions{}); ierr == nil && c.Container.State != nil && !c.Container.State.Running {
			return nil
		}
		return err
	})
}

// signalInit sends sig to the container's init through a pidfd, not
// through Docker, when the daemon is on this host. Docker's kill goes
// through runc, which takes an init that ended its main thread alone
// (its other threads running on: a tenant's process can do that) for not
// running; Docker answers the kill, waits out the stop timeout, and marks
// the container exited (255) while the tenant runs on; the real exit,
// later, it takes for an exec's, and containerd's task and shim are never
// deleted. A signal to the init's pid reaches its whole thread group,
// zombie leader or not, and the init's exit reaches Docker as the
// container's. The pidfd is opened first and the process checked to be in
// the container's cgroup after, so a reused pid is never signalled.
func signalInit(c *container.InspectResponse, sig syscall.Signal) error {
	notRunning := fmt.Errorf("container is not running: %w", errdefs.ErrFailedPrecondition)
	st, did := c.State, c.ID
	if st == nil || !st.Running || st.Pid <= 0 {
		return notRunning
	}
	err := reap.Signal(st.Pid, sig, func() error {
		if !inCgroupOf(st.Pid, did) {
			return reap.ErrGone
		}
		return nil
	})
	if errors.Is(err, reap.ErrGone) {
		return notRunning
	}
	if err != nil {
		return fmt.Errorf("%w: %w", err, errdefs.ErrUnknown)
	}
	return nil
}

// leaderGrace bounds how long sigkill's watch goes on killing through the
// cgroup once Docker's kill returned.
const leaderGrace = 10 * time.Second

// sigkill has Docker kill the container with SIGKILL, and sees that an
// init that ended its main thread alone while its other threads run on (a
// tenant's process can do that) dies whole meanwhile. Docker's SIGKILL
// reaches the leader alone, a zombie; Docker waits 10 s for an exit that
// does not come, takes the container for stopped, and then takes the
// real exit, once the rest is killed, for an exec's: it never deletes
// containerd's task, and its shim lives on for good, a process and its
// memory per such container. So while Docker's kill waits, berth kills
// whatever the container's cgroup holds as soon as the init's leader is a
// zombie, and the init's exit reaches Docker as the container's.
func (r *Runtime) sigkill(ctx context.Context, did string) error {
	c, err := r.eng.ContainerInspect(ctx, did, client.ContainerInspectOptions{})
	if err != nil {
		return err
	}
	pid := 0
	if c.Container.State != nil {
		pid = c.Container.State.Pid
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		if pid <= 0 {
			return
		}
		for delay := time.Millisecond; ; delay = min(2*delay, 20*time.Millisecond) {
			if reap.Zombie(pid) {
				// Only the cgroup's members are killed: a pid reused
				// meanwhile by another zombie costs nothing.
				_ = killLeftInCgroup(wctx, did)
				return
			}
			select {
			case <-stop:
				return
			case <-wctx.Done():
				return
			case <-time.After(delay):
			}
		}
	}()
	_, err = r.eng.ContainerKill(ctx, did, client.ContainerKillOptions{Signal: "9"})
	close(stop)
	// A kill under way through the cgroup finishes (its processes may be
	// frozen until Docker thaws them), within a bound.
	select {
	case <-watched:
	case <-time.After(leaderGrace):
		cancel()
		<-watched
	}
	return err
}

// Delete implements driver.Runtime.
func (r *Runtime) Delete(ctx context.Context, id string) error {
	c, err := r.inspect(ctx, id)
	if err != nil {
		return err
	}
	err = r.do(ctx, id, func(did string) error {
		if err := killLeftInCgroup(ctx, did); err != nil {
			return err
		}
		_, err := r.eng.ContainerRemove(ctx, did, client.ContainerRemoveOptions{RemoveVolumes: true})
		return err
	})
	if err != nil {
		return err
	}
	if img := c.Config.Labels[LabelStoreImage]; img != "" {
		r.releaseImage(context.WithoutCancel(ctx), img)
	}
	r.forget(id)
	r.mu.Lock()
	a := r.streams[id]
	delete(r.streams, id)
	delete(r.sizes, c.ID)
	r.mu.Unlock()
	if a != nil {
		a.stop()
	}
	if err := removeMounts(r.mountsDir(id)); err != nil {
		return fmt.Errorf("ID-mapped mounts: %w", err)
	}
	return nil
}

// Wait implements driver.Runtime. It works from any process, for any
// container of the scope, and across a restart of the daemon: a broken
// connection is retried until the daemon answers again (for up to
// reconnectTimeout).
func (r *Runtime) Wait(ctx context.Context, id string) (driver.ExitStatus, error) {
	var outage time.Time
	delay := 50 * time.Millisecond
	for {
		st, err := r.waitOnce(ctx, id)
		if err == nil {
			r.mu.Lock()
			a := r.streams[id]
			r.mu.Unlock()
			if a != nil {
				// The output is copied to the end before Wait returns.
				select {
				case <-a.done:
				case <-ctx.Done():
					return driver.ExitStatus{}, ctx.Err()
				}
			}
			return st, nil
		}
		if !errdefs.IsUnavailable(err) || ctx.Err() != nil {
			return driver.ExitStatus{}, err
		}
		if outage.IsZero() {
			outage = time.Now()
		} else if time.Since(outage) > reconnectTimeout {
			return driver.ExitStatus{}, fmt.Errorf("daemon unreachable for %s: %w", reconnectTimeout, err)
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return driver.ExitStatus{}, ctx.Err()
		}
		delay = min(2*delay, time.Second)
	}
}

// waitOnce registers for the container's next exit, then looks at its
// state: an exit before the registration shows there, one after it reaches
// the registration. No exit falls between the two.
func (r *Runtime) waitOnce(ctx context.Context, id string) (driver.ExitStatus, error) {
	c, err := r.inspect(ctx, id)
	if err != nil {
		return driver.ExitStatus{}, err
	}
	if st, ok := exitOf(c); ok {
		return st, nil
	}
	wctx, cancel := context.WithCancel(ctx)
	w := r.eng.ContainerWait(wctx, c.ID, client.ContainerWaitOptions{Condition: container.WaitConditionNextExit})
	received := false
	defer func() {
		cancel()
		if received {
			return
		}
		// The client sends a result that came in meanwhile on an
		// unbuffered channel: take it, or its goroutine stays.
		go func() {
			select {
			case <-w.Result:
			case <-w.Error:
			}
		}()
	}()
	select {
	case err := <-w.Error:
		received = true
		return driver.ExitStatus{}, classify(err)
	default:
	}
	c, err = r.inspect(ctx, id)
	if err != nil {
		return driver.ExitStatus{}, err
	}
	if st, ok := exitOf(c); ok {
		return st, nil
	}
	select {
	case res := <-w.Result:
		received = true
		if res.Error != nil && res.Error.Message != "" {
			return driver.ExitStatus{}, fmt.Errorf("wait: %s: %w", res.Error.Message, errdefs.ErrUnknown)
		}
		return exitStatus(int(res.StatusCode), time.Now().UTC()), nil
	case err := <-w.Error:
		received = true
		if ctx.Err() != nil {
			return driver.ExitStatus{}, ctx.Err()
		}
		return driver.ExitStatus{}, classify(err)
	case <-ctx.Done():
		return driver.ExitStatus{}, ctx.Err()
	}
}
