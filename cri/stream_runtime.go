package cri

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"k8s.io/cri-streaming/pkg/streaming"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"github.com/berthrun/berth/runtime"
)

// streamRuntime runs what the streaming server's URLs ask for. ctx is the
// client's request, which ends when the client goes away.
type streamRuntime struct{ s *RuntimeService }

var _ streaming.Runtime = streamRuntime{}

// execDrainGrace bounds the wait for the output of an exec killed when
// its client went away.
const execDrainGrace = 5 * time.Second

// exitError is a command's non-zero exit, in the shape the streaming
// library looks for (k8s.io/utils/exec.ExitError) to tell the client its
// exit code rather than an error.
type exitError struct {
	cmd  []string
	code int
}

var _ utilexec.ExitError = exitError{}

func (e exitError) Error() string {
	return fmt.Sprintf("command %q exited with code %d", e.cmd, e.code)
}
func (e exitError) String() string  { return e.Error() }
func (e exitError) Exited() bool    { return true }
func (e exitError) ExitStatus() int { return e.code }

// requireRunning refuses a container that is not running.
func requireRunning(ctx context.Context, c *container, rc *runtime.Container, what string) error {
	st, err := rc.State(ctx)
	if err != nil {
		return err
	}
	if st != runtime.StatusRunning {
		return fmt.Errorf("%s container %s: it is %s, not running: %w", what, c.ID, st, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// Exec runs cmd in the container as the container's user, in its working
// directory and environment, with a terminal when tty is set, until it
// exits. A client that goes away takes the process with it: it is killed,
// as ExecSync kills a command past its timeout, since nobody is left to
// read what it writes or type what it reads. (containerd lets it run on
// until it exits by itself, a goroutine waiting for it; berth leaves
// nothing behind a stream.)
func (r streamRuntime) Exec(ctx context.Context, containerID string, cmd []string, stdin io.Reader, stdout, stderr io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	c, rc, err := r.s.lookup(ctx, containerID)
	if err != nil {
		return err
	}
	if len(cmd) == 0 {
		return fmt.Errorf("exec in %s: no command: %w", c.ID, errdefs.ErrInvalidArgument)
	}
	if err := requireRunning(ctx, c, rc, "exec in"); err != nil {
		return err
	}
	info, err := rc.Info(ctx)
	if err != nil {
		return err
	}
	p := info.Spec.Process
	ps := &runtime.ProcessSpec{Args: cmd, Env: slices.Clone(p.Env), Cwd: p.Cwd, User: &p.User, Terminal: tty}
	if tty {
		if !slices.ContainsFunc(ps.Env, func(e string) bool { return strings.HasPrefix(e, "TERM=") }) {
			ps.Env = append(ps.Env, "TERM=xterm")
		}
		// The client's size when it has sent it already.
		select {
		case sz, ok := <-resize:
			if ok && sz.Width > 0 && sz.Height > 0 {
				ps.ConsoleSize = &specs.Box{Width: uint(sz.Width), Height: uint(sz.Height)}
			}
		default:
		}
	}
	pio := runtime.IO{Stdin: stdin, Stdout: stdout, Stderr: stderr}
	var out outputPipes
	if !tty {
		if pio.Stdout, err = out.pipe(stdout); err == nil {
			pio.Stderr, err = out.pipe(stderr)
		}
		if err != nil {
			out.cut()
			return fmt.Errorf("exec in %s: %w", c.ID, err)
		}
	}
	proc, err := rc.Exec(ctx, ps, pio)
	out.started()
	if err != nil {
		out.cut()
		return err
	}
	stopResizing := resizeFrom(ctx, resize, func(size specs.Box) error { return proc.Resize(ctx, size) })
	es, err := proc.Wait(ctx)
	stopResizing()
	if err != nil {
		bg := context.WithoutCancel(ctx)
		if serr := proc.Signal(bg, syscall.SIGKILL); serr != nil && !errdefs.IsFailedPrecondition(serr) && !errdefs.IsNotFound(serr) {
			log.Printf("cri: exec in %s: kill the process of a client that went away: %v", c.ID, serr)
		}
		out.cut()
		// A backend that copies the output itself (with a terminal) may
		// wait for what the process left running and holds it: nobody
		// reads it any more, so the stream does not wait long.
		wctx, cancel := context.WithTimeout(bg, execDrainGrace)
		_, werr := proc.Wait(wctx)
		cancel()
		if werr != nil {
			log.Printf("cri: exec in %s: the output of a killed process is still held open after %s (a process it started?): %v", c.ID, execDrainGrace, werr)
		}
		return fmt.Errorf("exec in %s: the client went away (%w): its process was killed", c.ID, err)
	}
	// The output to its end: the process's, and that of what it left
	// running, while the client is there to read it.
	err = out.drain(ctx)
	out.cut()
	if err != nil {
		return fmt.Errorf("exec in %s: the client went away (%w) before the end of the output", c.ID, err)
	}
	closeAll(stdout, stderr)
	if es.Code != 0 {
		return exitError{cmd: cmd, code: es.Code}
	}
	return nil
}

// Attach joins the streams of the container's init until its output ends
// or the client goes away (the container goes on). Its standard input is
// fed only to a container that keeps one open (the config's stdin), as
// containerd does; otherwise the client's is ignored.
func (r streamRuntime) Attach(ctx context.Context, containerID string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	c, rc, err := r.s.lookup(ctx, containerID)
	if err != nil {
		return err
	}
	if err := requireRunning(ctx, c, rc, "attach to"); err != nil {
		return err
	}
	if !c.cfg.GetStdin() {
		in = nil
	}
	stopResizing := func() {}
	if c.cfg.GetTty() {
		stopResizing = resizeFrom(ctx, resize, func(size specs.Box) error { return rc.Resize(ctx, size) })
	}
	err = rc.Attach(ctx, runtime.IO{Stdin: in, Stdout: out, Stderr: errw})
	stopResizing()
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("attach to %s: %w", c.ID, err)
	}
	closeAll(out, errw)
	return nil
}

// PortForward connects stream to port on the loopback of the pod the
// forward key names (the key stands for the pod: see streamServer), and
// copies both ways until both ends are done, or the client goes away. A
// port nobody listens on fails this stream only.
func (r streamRuntime) PortForward(_ context.Context, key string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	id, ctx, err := r.s.stream.forward(key)
	if err != nil {
		return err
	}
	if port < 1 || port > 65535 {
		return fmt.Errorf("port forward to pod %s: port %d out of range: %w", id, port, errdefs.ErrInvalidArgument)
	}
	sb, err := r.s.state.sandbox(id)
	if err != nil {
		return err
	}
	if sb.stopped() {
		return fmt.Errorf("port forward to pod %s: the pod is stopped: %w", id, errdefs.ErrFailedPrecondition)
	}
	conn, err := r.s.dialPod(ctx, sb, int(port))
	if err != nil {
		return fmt.Errorf("port forward to pod %s: %w", id, err)
	}
	if err := pipe(ctx, conn, stream); err != nil {
		return fmt.Errorf("port forward to pod %s port %d: %w", id, port, err)
	}
	return nil
}

// outputPipes are pipes of the server's own that an exec's process
// writes its output to without a terminal, copied here to the client's
// streams: the backend has no copy of its own to wait for, and a process
// that the exec left running in the container, holding the pipes open,
// holds nothing of the server's once the client is gone (cut closes the
// pipes).
type outputPipes struct {
	reads, writes []*os.File
	copies        sync.WaitGroup
}

// pipe is the write end of a new pipe copied to w, or nil for no w.
func (o *outputPipes) pipe(w io.WriteCloser) (io.Writer, error) {
	if w == nil {
		return nil, nil
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	o.reads, o.writes = append(o.reads, pr), append(o.writes, pw)
	o.copies.Go(func() { _, _ = io.Copy(w, pr) })
	return pw, nil
}

// started closes the server's write ends: the process has its own.
func (o *outputPipes) started() {
	for _, w := range o.writes {
		w.Close()
	}
	o.writes = nil
}

// drain waits until every writer closed its end and the copies are done,
// or ctx ends.
func (o *outputPipes) drain(ctx context.Context) error {
	done := make(chan struct{})
	go func() { o.copies.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// cut closes the pipes, ending the copies (a copy blocked writing to a
// client ends with the client's connection), and waits for them.
func (o *outputPipes) cut() {
	o.started()
	for _, r := range o.reads {
		r.Close()
	}
	o.copies.Wait()
}

// resizeFrom passes the sizes that come on ch to resize, until ch closes,
// ctx ends or stop is called (which returns once it stopped).
func resizeFrom(ctx context.Context, ch <-chan remotecommand.TerminalSize, resize func(specs.Box) error) (stop func()) {
	if ch == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-done:
				return
			case sz, ok := <-ch:
				if !ok {
					return
				}
				if sz.Width == 0 || sz.Height == 0 {
					continue
				}
				// A process that just exited has no terminal to size.
				_ = resize(specs.Box{Width: uint(sz.Width), Height: uint(sz.Height)})
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// closeAll closes the writers that are there: the end of the output.
func closeAll(ws ...io.WriteCloser) {
	for _, w := range ws {
		if w != nil {
			_ = w.Close()
		}
	}
}

// pipe copies between a pod's connection and a client's stream: what one
// side sends until its end, which is passed on as a half-close, until
// both sides are done, or ctx ends (then both are cut). It closes conn.
func pipe(ctx context.Context, conn net.Conn, stream io.ReadWriteCloser) error {
	defer conn.Close()
	errc := make(chan error, 2)
	go func() {
		_, err := io.Copy(conn, stream)
		if hc, ok := conn.(interface{ CloseWrite() error }); ok {
			_ = hc.CloseWrite()
		}
		errc <- err
	}()
	go func() {
		_, err := io.Copy(stream, conn)
		_ = stream.Close()
		errc <- err
	}()
	var first error
	for pending := 2; pending > 0; pending-- {
		select {
		case err := <-errc:
			if first == nil {
				first = err
			}
		case <-ctx.Done():
			// The client went away: nothing is left to copy for.
			conn.Close()
			if rs, ok := stream.(interface{ Reset() error }); ok {
				_ = rs.Reset()
			}
			for ; pending > 0; pending-- {
				<-errc
			}
			return nil
		}
	}
	if errors.Is(first, net.ErrClosed) {
		return nil
	}
	return first
}
