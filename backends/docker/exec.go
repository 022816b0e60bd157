package docker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/client"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/internal/errclass"
	"github.com/berthrun/berth/internal/reap"
	"github.com/berthrun/berth/runtime/driver"
)

// Exec implements driver.Execer. The process is attached whether or not
// the caller gave streams: Docker ends the attach stream when the process
// is done, which is how Wait learns of it.
func (r *Runtime) Exec(ctx context.Context, id string, ps *driver.ProcessSpec, pio driver.IO) (driver.Process, error) {
	if ps.ConsoleSize != nil && !ps.Terminal {
		return nil, invalid("exec: a console size without a terminal")
	}
	opts := client.ExecCreateOptions{
		Cmd: ps.Args, Env: ps.Env, WorkingDir: ps.Cwd, TTY: ps.Terminal,
		AttachStdin: pio.Stdin != nil, AttachStdout: pio.Stdout != nil, AttachStderr: pio.Stderr != nil && !ps.Terminal,
	}
	if b := ps.ConsoleSize; b != nil {
		// Daemons of API 1.42 and later size the terminal before the
		// process starts; older ones ignore it (see below).
		opts.ConsoleSize = client.ConsoleSize{Height: b.Height, Width: b.Width}
	}
	if u := ps.User; u != nil {
		if len(u.AdditionalGids) > 0 || u.Umask != nil || u.Username != "" {
			return nil, notImplemented("exec: Docker takes a user as UID:GID only")
		}
		opts.User = fmt.Sprintf("%d:%d", u.UID, u.GID)
	}
	var execID string
	err := r.do(ctx, id, func(did string) error {
		res, err := r.eng.ExecCreate(ctx, did, opts)
		execID = res.ID
		return err
	})
	if err != nil {
		return nil, err
	}
	// The start's TTY, not the create's, tells the daemon not to
	// multiplex the stream.
	res, err := r.eng.ExecAttach(ctx, execID, client.ExecAttachOptions{TTY: ps.Terminal, ConsoleSize: opts.ConsoleSize})
	if err != nil {
		return nil, classify(err)
	}
	p := &process{r: r, execID: execID, tty: ps.Terminal, done: make(chan struct{})}
	// Without a terminal the end of the caller's input closes the
	// process's stdin; with one, the daemon would end the output instead.
	a := copyStreams(res.HijackedResponse, pio, attachOptions{tty: ps.Terminal, closeStdin: !ps.Terminal})
	if pio.Stdin != nil {
		go p.endStdinAtExit(a)
	}
	go p.wait(a)
	if b := ps.ConsoleSize; b != nil {
		if err := p.sizeTerminal(ctx, *b); err != nil {
			// Not a process of the caller's: it goes.
			_ = p.Signal(context.WithoutCancel(ctx), syscall.SIGKILL)
			a.stop()
			return nil, err
		}
	}
	return p, nil
}

// process is a process started by Exec.
type process struct {
	r      *Runtime
	execID string
	tty    bool

	mu  sync.Mutex
	pid int

	done chan struct{}
	st   driver.ExitStatus
	err  error
}

// wait records the exit once the output is copied. The exit code is set
// by the daemon when the process's exit event arrives, which may follow
// the end of the stream by a moment; an attachment dropped (its writer
// blocked) or broken ended before the process, which is then waited for
// as long as it runs. A child the process left behind holding its output
// does not hold up the stream's end: the daemon stops waiting for an
// exec's streams 2 s after its exit and closes them (measured on dockerd
// 20.10 by the conformance suite's execChildHoldsOutput).
func (p *process) wait(a *attachment) {
	defer close(p.done)
	<-a.done
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	most := 100 * time.Millisecond
	if a.err == nil {
		ctx, cancel = context.WithTimeout(ctx, reconnectTimeout)
	} else {
		most = time.Second
	}
	defer cancel()
	for delay := time.Millisecond; ; delay = min(2*delay, most) {
		res, err := p.r.eng.ExecInspect(ctx, p.execID, client.ExecInspectOptions{})
		if err != nil {
			p.err = classify(err)
			return
		}
		if !res.Running {
			p.st = exitStatus(res.ExitCode, time.Now().UTC())
			return
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			p.err = fmt.Errorf("exec %s: no exit reported: %w", p.execID, errdefs.ErrUnknown)
			return
		}
	}
}

// endStdinAtExit ends the process's stdin once Docker reports it exited.
// The daemon ends the attach stream, and so Wait, only when the stream's
// stdin ends too: a process that exits without reading it would otherwise
// be waited for until the caller's stdin ends (a terminal, a client's
// stream left open). Its output is all in the stream by then, and what
// the caller writes to stdin after is dropped.
func (p *process) endStdinAtExit(a *attachment) {
	for delay := 10 * time.Millisecond; ; delay = min(2*delay, 250*time.Millisecond) {
		select {
		case <-a.done:
			return
		case <-time.After(delay):
		}
		ctx, cancel := context.WithTimeout(context.Background(), reconnectTimeout)
		res, err := p.r.eng.ExecInspect(ctx, p.execID, client.ExecInspectOptions{})
		cancel()
		if errdefs.IsNotFound(classify(err)) {
			return
		}
		if err == nil && !res.Running && res.PID > 0 {
			_ = a.resp.CloseWrite()
			return
		}
	}
}

// Pid implements driver.Process: the host pid, or 0 if Docker does not
// report one (the process has not started within a few seconds, or ended).
func (p *process) Pid() int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pid, _ := p.started(ctx)
	return pid
}

// started waits until Docker reports the process running: Docker starts it
// only after the attach stream is set up, a moment after Exec returned.
func (p *process) started(ctx context.Context) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pid > 0 {
		return p.pid, nil
	}
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		res, err := p.r.eng.ExecInspect(ctx, p.execID, client.ExecInspectOptions{})
		if err != nil {
			return 0, classify(err)
		}
		if res.Running && res.PID > 0 {
			p.pid = res.PID
			return p.pid, nil
		}
		select {
		case <-p.done:
			return 0, fmt.Errorf("process exited: %w", errdefs.ErrFailedPrecondition)
		case <-time.After(delay):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// Wait implements driver.Process.
func (p *process) Wait(ctx context.Context) (driver.ExitStatus, error) {
	select {
	case <-p.done:
		return p.st, p.err
	case <-ctx.Done():
		return driver.ExitStatus{}, ctx.Err()
	}
}

// Signal implements driver.Process. The Engine API cannot signal an exec'd
// process; berth signals its host pid, which needs the daemon on this host.
// The pidfd is opened first and the process checked alive after, so a
// reused pid is never signalled.
func (p *process) Signal(ctx context.Context, sig syscall.Signal) error {
	if !p.r.local {
		return notImplemented("signal to an exec'd process: the Engine API has none, and the daemon is not on this host")
	}
	pid, err := p.started(ctx)
	if err != nil {
		return err
	}
	err = reap.Signal(pid, sig, func() error {
		again, err := p.r.eng.ExecInspect(ctx, p.execID, client.ExecInspectOptions{})
		if err != nil {
			return classify(err)
		}
		if !again.Running || again.PID != pid {
			return reap.ErrGone
		}
		return nil
	})
	if errors.Is(err, reap.ErrGone) {
		return fmt.Errorf("process is not running: %w", errdefs.ErrFailedPrecondition)
	}
	if err != nil && !errclass.Has(err) {
		return fmt.Errorf("%w: %w", err, errdefs.ErrUnknown)
	}
	return err
}

// Resize implements driver.Process.
func (p *process) Resize(ctx context.Context, size specs.Box) error {
	if !p.tty {
		return fmt.Errorf("resize: the process has no terminal: %w", errdefs.ErrFailedPrecondition)
	}
	select {
	case <-p.done:
		return fmt.Errorf("resize: the process exited: %w", errdefs.ErrFailedPrecondition)
	default:
	}
	_, err := p.r.eng.ExecResize(ctx, p.execID, client.ExecResizeOptions{Height: size.Height, Width: size.Width})
	if err == nil {
		return nil
	}
	if res, ierr := p.r.eng.ExecInspect(ctx, p.execID, client.ExecInspectOptions{}); ierr == nil && !res.Running {
		return fmt.Errorf("resize: the process exited: %w", errdefs.ErrFailedPrecondition)
	}
	return classify(err)
}

// sizeTerminal gives the process's terminal its first size, on daemons
// that did not at its start (before API 1.42): the daemon waits until the
// process runs to take it, so the process runs for a moment with a
// terminal of no size. A process that is done already needs none.
func (p *process) sizeTerminal(ctx context.Context, size specs.Box) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	_, err := p.r.eng.ExecResize(ctx, p.execID, client.ExecResizeOptions{Height: size.Height, Width: size.Width})
	if err == nil {
		return nil
	}
	select {
	case <-p.done:
		return nil
	default:
	}
	if res, ierr := p.r.eng.ExecInspect(context.WithoutCancel(ctx), p.execID, client.ExecInspectOptions{}); ierr == nil && !res.Running && res.PID > 0 {
		return nil
	}
	return fmt.Errorf("exec: terminal size: %w", classify(err))
}
