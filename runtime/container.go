package runtime

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/internal/phase"
	"github.com/berthrun/berth/runtime/driver"
)

// Container is a handle on one container. It holds no state of its own:
// every call asks the backend, so several handles (or processes) may
// control the same container.
type Container struct {
	r  *Runtime
	id string
}

// ID returns the container's ID.
func (c *Container) ID() string { return c.id }

// As reaches a backend-native type for this container, as Runtime.As does
// for the runtime (gocloud.dev's As): i points to a type the backend's
// documentation lists, which As sets; it reports whether it did. A backend
// without per-container types accepts none.
func (c *Container) As(i any) bool {
	a, ok := c.r.d.(driver.ContainerAser)
	return ok && a.ContainerAs(c.id, i)
}

// Info describes the container as the backend sees it now. The Info is
// the caller's own to change.
func (c *Container) Info(ctx context.Context) (*Info, error) {
	i, err := c.info(ctx)
	if err != nil {
		return nil, err
	}
	return ownInfo(c.id, i)
}

// info is Info as the backend gave it, shared: for reading only.
func (c *Container) info(ctx context.Context) (*Info, error) {
	i, err := c.r.d.State(ctx, c.id)
	if err != nil {
		return nil, wrap(c.id, err)
	}
	return i, nil
}

// ownInfo copies what a backend may share with others (it may keep the
// spec it read, see driver.Info).
func ownInfo(id string, i *Info) (*Info, error) {
	out := *i
	out.Labels = maps.Clone(i.Labels)
	out.Spec = copySpec(i.Spec)
	if i.Exit != nil {
		e := *i.Exit
		out.Exit = &e
	}
	return &out, nil
}

// State returns the container's lifecycle state.
func (c *Container) State(ctx context.Context) (Status, error) {
	i, err := c.info(ctx)
	if err != nil {
		return "", err
	}
	return i.Status, nil
}

// require fails with failed-precondition unless the container is in one of
// the allowed states.
func (c *Container) require(ctx context.Context, op string, allowed ...Status) (*Info, error) {
	i, err := c.info(ctx)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(allowed, i.Status) {
		return nil, fmt.Errorf("container %q: cannot %s a %s container: %w", c.id, op, i.Status, errdefs.ErrFailedPrecondition)
	}
	return i, nil
}

func (c *Container) capable(op string, ok bool) error {
	if !ok {
		return fmt.Errorf("container %q: %s: %w", c.id, op, errdefs.ErrNotImplemented)
	}
	return nil
}

// Start runs the container's process.
func (c *Container) Start(ctx context.Context) error {
	sp := phase.Begin(ctx)
	if _, err := c.require(ctx, "start", StatusCreated); err != nil {
		return err
	}
	sp.Mark("start.state")
	return c.r.events.act(c.id, EventStarted, func() error { return wrap(c.id, c.r.d.Start(ctx, c.id)) })
}

// Wait blocks until the container's process exits, or ctx ends.
func (c *Container) Wait(ctx context.Context) (ExitStatus, error) {
	st, err := c.r.d.Wait(ctx, c.id)
	return st, wrap(c.id, err)
}

// Kill sends sig to the container's init process.
func (c *Container) Kill(ctx context.Context, sig syscall.Signal) error {
	if sig <= 0 || sig > 64 {
		return fmt.Errorf("container %q: signal %d: %w", c.id, sig, errdefs.ErrInvalidArgument)
	}
	if _, err := c.require(ctx, "kill", StatusCreated, StatusRunning, StatusPaused); err != nil {
		return err
	}
	return wrap(c.id, c.r.d.Kill(ctx, c.id, sig))
}

// Stop ends the container's process the way docker stop does: SIGTERM,
// up to grace for it to exit, then SIGKILL, and it returns once the
// process is gone. A stopped container is left as it is; a created one,
// whose program never ran, is failed-precondition (Delete it instead).
// A paused container gets SIGKILL at once: its frozen processes could not
// handle SIGTERM before the grace ended anyway, and thawing it first would
// change its state behind the caller's back (Docker's stop waits out the
// grace in vain instead). Stop works on every backend: it is Kill and Wait.
func (c *Container) Stop(ctx context.Context, grace time.Duration) error {
	if grace < 0 {
		return fmt.Errorf("container %q: stop grace %v: %w", c.id, grace, errdefs.ErrInvalidArgument)
	}
	i, err := c.info(ctx)
	if err != nil {
		return err
	}
	switch i.Status {
	case StatusStopped:
		return nil
	case StatusRunning:
		if err := c.signal(ctx, syscall.SIGTERM); err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, grace)
		_, err := c.r.d.Wait(wctx, c.id)
		graceOver := wctx.Err() != nil && ctx.Err() == nil
		cancel()
		if err == nil {
			return nil
		}
		if !graceOver {
			return wrap(c.id, err)
		}
	case StatusPaused:
	default:
		return fmt.Errorf("container %q: cannot stop a %s container: %w", c.id, i.Status, errdefs.ErrFailedPrecondition)
	}
	if err := c.signal(ctx, syscall.SIGKILL); err != nil {
		return err
	}
	_, err = c.r.d.Wait(ctx, c.id)
	return wrap(c.id, err)
}

// signal sends sig, taking a container that stopped meanwhile for done.
func (c *Container) signal(ctx context.Context, sig syscall.Signal) error {
	err := c.r.d.Kill(ctx, c.id, sig)
	if err == nil || errdefs.IsNotFound(err) || errdefs.IsFailedPrecondition(err) {
		if err != nil {
			if st, serr := c.State(ctx); serr == nil && st != StatusStopped {
				return wrap(c.id, err)
			}
		}
		return nil
	}
	return wrap(c.id, err)
}

// DeleteOptions tune Delete.
type DeleteOptions struct {
	// Force kills a running or paused container first.
	Force bool
}

// Delete removes the container and everything held for it: cgroups,
// mounts, state, volumes, root disk, and its user namespace block (its
// hold on it, when it shares another's: the block is free once no
// container holds it). A container whose namespaces others joined
// (Config.Join) is not deleted while they exist, even with Force:
// failed-precondition, naming them, before anything is killed.
func (c *Container) Delete(ctx context.Context, opts DeleteOptions) error {
	// The events of what this call did, reported as it returns; a
	// stopped container's exit is reported before anything is removed
	// (below), if it was not reported yet.
	var evs []Event
	c.r.events.begin(c.id)
	defer func() { c.r.events.done(c.id, evs...) }()
	sp := phase.Begin(ctx)
	i, err := c.info(ctx)
	if err != nil {
		return err
	}
	sp.Mark("delete.state")
	// Before anything is killed; again under the owner lock below, which
	// keeps new joiners out.
	if err := c.r.refuseJoined(ctx, c.id); err != nil {
		return err
	}
	sp.Mark("delete.joins")
	switch i.Status {
	case StatusRunning, StatusPaused:
		if !opts.Force {
			return fmt.Errorf("container %q: cannot delete a %s container without force: %w", c.id, i.Status, errdefs.ErrFailedPrecondition)
		}
		if err := c.r.d.Kill(ctx, c.id, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) && !errdefs.IsFailedPrecondition(err) {
			return wrap(c.id, err)
		}
		es, err := c.r.d.Wait(ctx, c.id)
		if err != nil {
			return wrap(c.id, err)
		}
		// Reported now: a wait for the exit under way elsewhere could
		// otherwise read it only after the removal below and report it
		// lost.
		c.r.events.report(c.id, Event{Type: EventStopped, ID: c.id, Time: es.ExitedAt, Exit: &es})
	case StatusStopped:
		ev := Event{Type: EventStopped, ID: c.id, Exit: i.Exit}
		if i.Exit != nil {
			ev.Time = i.Exit.ExitedAt
		}
		c.r.events.report(c.id, ev)
	}
	sp.Skip()
	unlock, err := c.r.volumes.LockOwner(c.id)
	if err != nil {
		return wrap(c.id, err)
	}
	defer unlock()
	sp.Mark("delete.lock")
	if err := c.r.refuseJoined(ctx, c.id); err != nil {
		return err
	}
	sp.Mark("delete.joins")
	if err := c.r.d.Delete(ctx, c.id); err != nil {
		return wrap(c.id, err)
	}
	sp.Skip()
	evs = append(evs, Event{Type: EventDeleted, ID: c.id})
	// The container is gone: release everything it held, each step
	// whatever the others did.
	errs := []error{c.r.releaseVolumes(ctx, c.id), c.r.releaseImage(ctx, c.id), c.r.releaseJoins(c.id)}
	if driver.HasUserNamespace(i.Spec) {
		errs = append(errs, c.r.ids.release(c.id))
	}
	sp.Mark("delete.release")
	return wrap(c.id, errors.Join(errs...))
}

// Exec starts an extra process in the running container.
func (c *Container) Exec(ctx context.Context, p *ProcessSpec, pio IO) (*Process, error) {
	if err := c.capable("exec", c.r.exec != nil); err != nil {
		return nil, err
	}
	if p == nil || len(p.Args) == 0 {
		return nil, fmt.Errorf("container %q: exec without arguments: %w", c.id, errdefs.ErrInvalidArgument)
	}
	if p.Cwd != "" && !filepath.IsAbs(p.Cwd) {
		return nil, fmt.Errorf("container %q: exec working directory %q is not absolute: %w", c.id, p.Cwd, errdefs.ErrInvalidArgument)
	}
	if p.ConsoleSize != nil && !p.Terminal {
		return nil, fmt.Errorf("container %q: exec with a console size and no terminal: %w", c.id, errdefs.ErrInvalidArgument)
	}
	if p.ConsoleSize != nil && !boxFits(*p.ConsoleSize) {
		return nil, fmt.Errorf("container %q: exec console size %dx%d: %w", c.id, p.ConsoleSize.Height, p.ConsoleSize.Width, errBoxSize())
	}
	if p.Terminal && !c.r.caps.Terminal {
		return nil, fmt.Errorf("container %q: exec with a terminal: %w", c.id, errdefs.ErrNotImplemented)
	}
	if _, err := c.require(ctx, "exec in", StatusRunning); err != nil {
		return nil, err
	}
	dp, err := c.r.exec.Exec(ctx, c.id, p, pio)
	if err != nil {
		return nil, wrap(c.id, err)
	}
	return &Process{c: c, p: dp}, nil
}

// Attach joins the streams of the container's init, created or running,
// from any process, as `docker attach` does, on backends with
// Capabilities.Attach: what the init writes from then on goes to
// pio.Stdout and pio.Stderr (with a terminal, all of it to pio.Stdout),
// and pio.Stdin is fed to its standard input, which must have been kept
// open for that (Config.OpenStdin; failed-precondition otherwise). Several
// attachments may be joined at once, and each gets all the output.
//
// Attach returns nil once the init's output has ended (it exited, or
// closed its output, and what it wrote was copied), or ctx's error when
// ctx ends: the attachment is then dropped and the container goes on (a
// detach); no write to pio's writers begins after Attach returned. A
// writer that fails or blocks for long is dropped and never holds up the
// container nor the other attachments. The end of pio.Stdin closes the
// init's standard input with Config.StdinOnce only (and never a
// terminal's).
func (c *Container) Attach(ctx context.Context, pio IO) error {
	if err := c.capable("attach", c.r.streams != nil); err != nil {
		return err
	}
	if _, err := c.require(ctx, "attach to", StatusCreated, StatusRunning, StatusPaused); err != nil {
		return err
	}
	return wrap(c.id, c.r.streams.Attach(ctx, c.id, pio))
}

// Resize sets the size of the terminal of the container's init
// (Spec.Process.Terminal; failed-precondition for an init without one). A
// terminal has at most 65535 rows and columns (invalid-argument beyond).
func (c *Container) Resize(ctx context.Context, size specs.Box) error {
	if err := c.capable("resize", c.r.streams != nil); err != nil {
		return err
	}
	if !boxFits(size) {
		return fmt.Errorf("container %q: resize to %dx%d: %w", c.id, size.Height, size.Width, errBoxSize())
	}
	i, err := c.require(ctx, "resize the terminal of", StatusCreated, StatusRunning, StatusPaused)
	if err != nil {
		return err
	}
	if i.Spec == nil || i.Spec.Process == nil || !i.Spec.Process.Terminal {
		return fmt.Errorf("container %q: resize: the init has no terminal: %w", c.id, errdefs.ErrFailedPrecondition)
	}
	return wrap(c.id, c.r.streams.ResizeTerminal(ctx, c.id, size))
}

// Pause freezes every process of the container.
func (c *Container) Pause(ctx context.Context) error {
	if err := c.capable("pause", c.r.pause != nil); err != nil {
		return err
	}
	if _, err := c.require(ctx, "pause", StatusRunning); err != nil {
		return err
	}
	return c.r.events.act(c.id, EventPaused, func() error { return wrap(c.id, c.r.pause.Pause(ctx, c.id)) })
}

// Resume thaws a paused container.
func (c *Container) Resume(ctx context.Context) error {
	if err := c.capable("resume", c.r.pause != nil); err != nil {
		return err
	}
	if _, err := c.require(ctx, "resume", StatusPaused); err != nil {
		return err
	}
	return c.r.events.act(c.id, EventResumed, func() error { return wrap(c.id, c.r.pause.Resume(ctx, c.id)) })
}

// Process is an extra process started by Exec.
type Process struct {
	c *Container
	p driver.Process
}

// Pid is the process's pid on the host (0 if the backend cannot tell).
func (p *Process) Pid() int { return p.p.Pid() }

// Wait returns once the process has exited and its output was copied;
// output that a process it left behind keeps writing is copied while it
// makes progress, and cut after 2 s of none, or 10 s after the exit in all
// (Docker's daemon cuts it 2 s after the exit), so that a child holding the
// output, or writing on, never holds up Wait.
func (p *Process) Wait(ctx context.Context) (ExitStatus, error) {
	st, err := p.p.Wait(ctx)
	return st, wrap(p.c.id, err)
}

// Signal sends sig to the process.
func (p *Process) Signal(ctx context.Context, sig syscall.Signal) error {
	return wrap(p.c.id, p.p.Signal(ctx, sig))
}

// Resize sets the size of the process's terminal (ProcessSpec.Terminal;
// failed-precondition for a process without one); at most 65535 rows and
// columns (invalid-argument beyond).
func (p *Process) Resize(ctx context.Context, size specs.Box) error {
	if !boxFits(size) {
		return fmt.Errorf("container %q: resize to %dx%d: %w", p.c.id, size.Height, size.Width, errBoxSize())
	}
	return wrap(p.c.id, p.p.Resize(ctx, size))
}

// errBoxSize is a terminal size out of range. (A function, not an error
// made as the package initializes: every container's init starts the
// program anew, and runs every package's initialization.)
func errBoxSize() error {
	return fmt.Errorf("a terminal has at most 65535 rows and columns: %w", errdefs.ErrInvalidArgument)
}

// boxFits reports whether a terminal can have size b: its rows and
// columns are 16-bit numbers.
func boxFits(b specs.Box) bool { return b.Height <= 0xffff && b.Width <= 0xffff }
