package docker

import (
	"bytes"
	"context"
	"io"
	"net"
	goruntime "runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/client"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/runtimetest"
)

// trackingEngine counts the attach connections open.
type trackingEngine struct {
	engine
	open atomic.Int64
}

func (e *trackingEngine) ContainerAttach(ctx context.Context, id string, o client.ContainerAttachOptions) (client.ContainerAttachResult, error) {
	res, err := e.engine.ContainerAttach(ctx, id, o)
	if err == nil {
		e.open.Add(1)
		res.Conn = &trackedConn{Conn: res.Conn, e: e}
	}
	return res, err
}

type trackedConn struct {
	net.Conn
	once sync.Once
	e    *trackingEngine
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.e.open.Add(-1) })
	return c.Conn.Close()
}

func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(client.CloseWriter); ok {
		return cw.CloseWrite()
	}
	return nil
}

// attachGoroutines counts the goroutines of this package's attachments.
func attachGoroutines() int {
	buf := make([]byte, 1<<22)
	buf = buf[:goruntime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, f := range []string{"docker.(*attachment)", "docker.(*outbox)", "docker.copyStreams", "docker.(*Runtime).endAfterExit"} {
			if strings.Contains(g, f) {
				n++
				break
			}
		}
	}
	return n
}

func terminalConfig(h *harness, t *testing.T, size *specs.Box, args ...string) *runtime.Config {
	cfg := h.Config(t, args...)
	cfg.Spec.Process.Terminal = true
	cfg.Spec.Process.ConsoleSize = size
	return cfg
}

func createStarted(ctx context.Context, t *testing.T, rt *runtime.Runtime, prefix string, cfg *runtime.Config, start bool) *runtime.Container {
	t.Helper()
	c, err := rt.Create(ctx, runtimetest.NewID(prefix), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Delete(context.Background(), runtime.DeleteOptions{Force: true}) })
	if start {
		require.NoError(t, c.Start(ctx))
	}
	return c
}

// The init with a terminal: a terminal as its stdin, stdout and stderr
// alike going to IO.Stdout and to the log, the spec's console size, its
// exit code. The process reads a line before it looks at its size: the
// size is set by the time Start returns, not before the process runs, on a
// daemon older than API 1.42 (see doc.go).
func TestTerminalInit(t *testing.T) {
	requireDaemon(t, plainHost)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := &harness{host: plainHost}
	rt := h.Open(t)
	out, errOut := runtimetest.NewBuffer(), runtimetest.NewBuffer()
	stdin, typed := io.Pipe()
	defer typed.Close()
	cfg := terminalConfig(h, t, &specs.Box{Height: 31, Width: 97}, "/bin/sh", "-c",
		`read x; test -t 0 && echo "in:tty"; test -t 1 && echo "out:tty"; stty size; echo "to err" >&2; exit 3`)
	cfg.IO = runtime.IO{Stdin: stdin, Stdout: out, Stderr: errOut}
	c := createStarted(ctx, t, rt, "tty-init", cfg, true)
	_, err := typed.Write([]byte("go\n"))
	require.NoError(t, err)
	st, err := c.Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, 3, st.Code)
	got := out.String()
	for _, want := range []string{"go\r\n", "in:tty\r\n", "out:tty\r\n", "31 97\r\n", "to err\r\n"} {
		assert.Contains(t, got, want, "the terminal's output (and its echo), with its line endings")
	}
	assert.Empty(t, errOut.String(), "a terminal has one output")

	rc, err := c.Logs(ctx)
	require.NoError(t, err)
	logged, err := io.ReadAll(rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	assert.Contains(t, string(logged), "31 97\r\n", "the terminal's output is in the log, not multiplexed")
	assert.Contains(t, string(logged), "to err\r\n")
	var followed bytes.Buffer
	require.NoError(t, c.WriteLogs(ctx, &followed, runtime.LogOptions{Follow: true}))
	assert.Equal(t, string(logged), followed.String())

	// Without writers: the log has it all the same.
	quiet := createStarted(ctx, t, rt, "tty-quiet", terminalConfig(h, t, nil, "/bin/sh", "-c", "test -t 1 && echo quiet-tty"), true)
	st, err = quiet.Wait(ctx)
	require.NoError(t, err)
	require.Zero(t, st.Code)
	rc, err = quiet.Logs(ctx)
	require.NoError(t, err)
	logged, err = io.ReadAll(rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	assert.Equal(t, "quiet-tty\r\n", string(logged))
}

// An exec'd process with a terminal: its size, a resize, and ^C typed into
// it; a process without one cannot be resized.
func TestTerminalExec(t *testing.T) {
	requireDaemon(t, plainHost)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := &harness{host: plainHost}
	rt := h.Open(t)
	c := createStarted(ctx, t, rt, "tty-exec", h.Config(t, "/bin/sleep", "1000"), true)

	out := runtimetest.NewBuffer()
	stdin, typed := io.Pipe()
	defer typed.Close()
	p, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/sh", "-c", `read x; test -t 0 && echo "is a tty"; stty size; read y; stty size; echo "to err" >&2; exit 4`},
		Terminal: true, ConsoleSize: &specs.Box{Height: 20, Width: 70}}, runtime.IO{Stdin: stdin, Stdout: out})
	require.NoError(t, err)
	_, err = typed.Write([]byte("a\n"))
	require.NoError(t, err)
	require.NoError(t, out.WaitFor(ctx, "20 70\r\n"))
	require.NoError(t, p.Resize(ctx, specs.Box{Height: 40, Width: 120}))
	_, err = typed.Write([]byte("b\n"))
	require.NoError(t, err)
	st, err := p.Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, 4, st.Code)
	assert.Contains(t, out.String(), "is a tty\r\n")
	assert.Contains(t, out.String(), "40 120\r\n")
	assert.Contains(t, out.String(), "to err\r\n", "stderr is the terminal too")
	err = p.Resize(ctx, specs.Box{Height: 1, Width: 1})
	assert.True(t, errdefs.IsFailedPrecondition(err), "resize after the exit: %v", err)

	// ^C typed into the terminal interrupts the process in it.
	out = runtimetest.NewBuffer()
	stdin, typed = io.Pipe()
	defer typed.Close()
	p, err = c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/sh", "-c", "echo ready; sleep 1000"}, Terminal: true}, runtime.IO{Stdin: stdin, Stdout: out})
	require.NoError(t, err)
	require.NoError(t, out.WaitFor(ctx, "ready"))
	_, err = typed.Write([]byte{3})
	require.NoError(t, err)
	st, err = p.Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, 130, st.Code)
	assert.Equal(t, syscall.SIGINT, st.Signal)

	// No terminal: no resize.
	plain, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/sleep", "1000"}}, runtime.IO{})
	require.NoError(t, err)
	err = plain.Resize(ctx, specs.Box{Height: 10, Width: 10})
	assert.True(t, errdefs.IsFailedPrecondition(err), "%v", err)
	require.NoError(t, plain.Signal(ctx, syscall.SIGKILL))
	_, err = plain.Wait(ctx)
	require.NoError(t, err)
}

// The init's terminal resized while it runs, or is paused; an init without
// a terminal, or not yet running, cannot be resized. Docker refuses to
// attach to a paused container.
func TestTerminalResizeInit(t *testing.T) {
	requireDaemon(t, plainHost)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := &harness{host: plainHost}
	rt := h.Open(t)
	out := runtimetest.NewBuffer()
	stdin, typed := io.Pipe()
	defer typed.Close()
	cfg := terminalConfig(h, t, &specs.Box{Height: 10, Width: 50}, "/bin/sh", "-c", "read x; stty size; read y; stty size")
	cfg.IO = runtime.IO{Stdin: stdin, Stdout: out}
	c := createStarted(ctx, t, rt, "tty-resize", cfg, false)
	var e *Runtime
	require.True(t, rt.As(&e))
	err := e.ResizeTerminal(ctx, c.ID(), specs.Box{Height: 5, Width: 5})
	assert.True(t, errdefs.IsFailedPrecondition(err), "created: %v", err)
	require.NoError(t, c.Start(ctx))
	_, err = typed.Write([]byte("a\n"))
	require.NoError(t, err)
	require.NoError(t, out.WaitFor(ctx, "10 50\r\n"))
	// Paused: Docker resizes, and refuses an attach.
	require.NoError(t, c.Pause(ctx))
	require.NoError(t, c.Resize(ctx, specs.Box{Height: 33, Width: 66}))
	err = c.Attach(ctx, runtime.IO{Stdout: io.Discard})
	assert.True(t, errdefs.IsFailedPrecondition(err), "attach to a paused container: %v", err)
	require.NoError(t, c.Resume(ctx))
	_, err = typed.Write([]byte("b\n"))
	require.NoError(t, err)
	_, err = c.Wait(ctx)
	require.NoError(t, err)
	assert.Contains(t, out.String(), "33 66\r\n")

	plain := createStarted(ctx, t, rt, "no-tty", h.Config(t, "/bin/sleep", "1000"), true)
	err = plain.Resize(ctx, specs.Box{Height: 5, Width: 5})
	assert.True(t, errdefs.IsFailedPrecondition(err), "%v", err)
	err = e.ResizeTerminal(ctx, plain.ID(), specs.Box{Height: 5, Width: 5})
	assert.True(t, errdefs.IsFailedPrecondition(err), "the backend's own check: %v", err)
	require.NoError(t, plain.Kill(ctx, syscall.SIGKILL))
}

// Attach from another runtime of the scope gets the output that comes
// after it, and its input reaches the init through cat; a canceled context
// detaches, leaving the container running and nothing of the attachment
// behind; the standard input stays open for the next attachment.
func TestAttach(t *testing.T) {
	requireDaemon(t, plainHost)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := &harness{host: plainHost}
	rt := h.Open(t)
	cfg := h.Config(t, "/bin/sh", "-c", `echo first; cat; echo "cat ended"`)
	cfg.OpenStdin = true
	c := createStarted(ctx, t, rt, "attach", cfg, true)
	require.Eventually(t, func() bool {
		rc, err := c.Logs(ctx)
		if err != nil {
			return false
		}
		defer rc.Close()
		b, _ := io.ReadAll(rc)
		return strings.Contains(string(b), "first")
	}, time.Minute, 20*time.Millisecond)

	// Another runtime of the scope, as another process would be, with
	// its attach connections counted.
	state, _ := h.states.Load(rt)
	e, err := Open(WithHost(h.host), WithScope(state.(string)))
	require.NoError(t, err)
	te := &trackingEngine{engine: e.eng}
	e.eng = te
	rt2, err := runtime.New(e, runtime.WithStateDir(fixture.TempDir(t)))
	require.NoError(t, err)
	defer rt2.Close()
	c2, err := rt2.Get(ctx, c.ID())
	require.NoError(t, err)

	before := attachGoroutines()
	out := runtimetest.NewBuffer()
	stdin, typed := io.Pipe()
	actx, detach := context.WithCancel(ctx)
	attached := make(chan error, 1)
	go func() { attached <- c2.Attach(actx, runtime.IO{Stdin: stdin, Stdout: out, Stderr: out}) }()
	_, err = typed.Write([]byte("hello\n"))
	require.NoError(t, err)
	require.NoError(t, out.WaitFor(ctx, "hello\n"))
	detach()
	require.ErrorIs(t, <-attached, context.Canceled)
	typed.Close() // the copy of the input ends at its next read
	assert.NotContains(t, out.String(), "first", "output from before the attachment")
	st, err := c.State(ctx)
	require.NoError(t, err)
	assert.Equal(t, runtime.StatusRunning, st, "a detach leaves the container running")
	assert.Zero(t, te.open.Load(), "attach connections left open")
	require.Eventually(t, func() bool { return attachGoroutines() <= before }, time.Minute, 10*time.Millisecond,
		"goroutines of the attachment left: %d, %d before", attachGoroutines(), before)

	// The input ended with the detach, not the init's stdin: the next
	// attachment feeds it, and sees the init's output to its end.
	out = runtimetest.NewBuffer()
	go func() { attached <- c2.Attach(ctx, runtime.IO{Stdin: strings.NewReader("again\n"), Stdout: out}) }()
	require.NoError(t, out.WaitFor(ctx, "again\n"))
	require.NoError(t, c.Kill(ctx, syscall.SIGKILL))
	require.NoError(t, <-attached, "the output ended")
	assert.Zero(t, te.open.Load(), "attach connections left open")
}

// With StdinOnce the end of the first attachment's input, or its detach,
// closes the init's: cat ends, and so the attachment. Without OpenStdin an
// attachment cannot give input.
func TestAttachStdinOnce(t *testing.T) {
	requireDaemon(t, plainHost)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := &harness{host: plainHost}
	rt := h.Open(t)
	cfg := h.Config(t, "/bin/sh", "-c", `cat; echo "cat ended"; exit 7`)
	cfg.OpenStdin, cfg.StdinOnce = true, true
	c := createStarted(ctx, t, rt, "once", cfg, true)
	out := runtimetest.NewBuffer()
	require.NoError(t, c.Attach(ctx, runtime.IO{Stdin: strings.NewReader("once\n"), Stdout: out}))
	assert.Equal(t, "once\ncat ended\n", out.String())
	st, err := c.Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, 7, st.Code)

	// A detach ends the input too.
	cfg = h.Config(t, "/bin/sh", "-c", `cat; exit 8`)
	cfg.OpenStdin, cfg.StdinOnce = true, true
	c = createStarted(ctx, t, rt, "once-detach", cfg, true)
	out = runtimetest.NewBuffer()
	stdin, typed := io.Pipe()
	defer typed.Close()
	actx, detach := context.WithCancel(ctx)
	attached := make(chan error, 1)
	go func() { attached <- c.Attach(actx, runtime.IO{Stdin: stdin, Stdout: out}) }()
	_, err = typed.Write([]byte("typed\n"))
	require.NoError(t, err)
	require.NoError(t, out.WaitFor(ctx, "typed\n"))
	detach()
	require.ErrorIs(t, <-attached, context.Canceled)
	st, err = c.Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, 8, st.Code, "cat saw the end of its input")

	for name, cfg := range map[string]*runtime.Config{
		"no stdin":        h.Config(t, "/bin/sleep", "1000"),
		"stdin at create": {Spec: runtime.DefaultSpec("", "/bin/sleep", "1000"), Image: busyboxRef, IO: runtime.IO{Stdin: strings.NewReader("")}},
	} {
		c := createStarted(ctx, t, rt, "closed", cfg, true)
		err := c.Attach(ctx, runtime.IO{Stdin: strings.NewReader("x\n"), Stdout: io.Discard})
		assert.True(t, errdefs.IsFailedPrecondition(err), "%s: %v", name, err)
		require.NoError(t, c.Kill(ctx, syscall.SIGKILL))
	}
}

// An attachment made as the container exits returns: the daemon never
// ends an attach it registers after the exit.
func TestAttachRacingExit(t *testing.T) {
	requireDaemon(t, plainHost)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := &harness{host: plainHost}
	rt := h.Open(t)
	for i := 0; i < 3; i++ {
		c := createStarted(ctx, t, rt, "racing", h.Config(t, "/bin/true"), true)
		err := c.Attach(ctx, runtime.IO{Stdout: io.Discard})
		assert.True(t, err == nil || errdefs.IsFailedPrecondition(err), "%v", err)
		require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	}
}

// An attachment to a created container gets its output from the start,
// and ends with it; one whose container is deleted before it starts ends.
func TestAttachCreated(t *testing.T) {
	requireDaemon(t, plainHost)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := &harness{host: plainHost}
	rt := h.Open(t)
	c := createStarted(ctx, t, rt, "created", h.Config(t, "/bin/sh", "-c", "echo from-the-start"), false)
	out := runtimetest.NewBuffer()
	attached := make(chan error, 1)
	go func() { attached <- c.Attach(ctx, runtime.IO{Stdout: out}) }()
	// The attachment is made before the start when the start comes
	// later; either way Attach returns with the output's end.
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, c.Start(ctx))
	require.NoError(t, <-attached)
	t.Logf("attached before the start: %q", out.String())

	c = createStarted(ctx, t, rt, "deleted", h.Config(t, "/bin/true"), false)
	go func() { attached <- c.Attach(ctx, runtime.IO{Stdout: io.Discard}) }()
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	err := <-attached
	assert.True(t, err == nil || errdefs.IsNotFound(err), "%v", err)
}

// blockingWriter blocks every write until released, and tells when the
// first one came.
type blockingWriter struct {
	first   chan struct{}
	once    sync.Once
	release chan struct{}
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.first) })
	<-w.release
	return 0, io.ErrClosedPipe
}

// An attachment whose writer blocks holds up neither the container nor
// another attachment for long: Docker would stop the container's output on
// it for good. It is dropped once its write blocked for writerStall with
// the backlog full.
func TestAttachBlockedWriter(t *testing.T) {
	requireDaemon(t, plainHost)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h := &harness{host: plainHost}
	rt := h.Open(t)
	c := createStarted(ctx, t, rt, "blocked", h.Config(t, "/bin/sh", "-c", "while :; do echo aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; done"), true)
	blocked := &blockingWriter{first: make(chan struct{}), release: make(chan struct{})}
	defer close(blocked.release)
	dropped := make(chan error, 1)
	go func() { dropped <- c.Attach(ctx, runtime.IO{Stdout: blocked}) }()
	select {
	case <-blocked.first:
	case <-ctx.Done():
		t.Fatal("no output reached the blocked attachment")
	}
	out := runtimetest.NewBuffer()
	actx, detach := context.WithCancel(ctx)
	defer detach()
	attached := make(chan error, 1)
	go func() { attached <- c.Attach(actx, runtime.IO{Stdout: out}) }()
	// Well past what Docker holds for a client that does not read, and
	// what berth holds for a writer before dropping it.
	require.NoError(t, out.WaitLen(ctx, 8<<20))
	err := <-dropped
	assert.True(t, errdefs.IsResourceExhausted(err), "the blocked attachment is dropped: %v", err)
	detach()
	require.ErrorIs(t, <-attached, context.Canceled)
	st, err := c.State(ctx)
	require.NoError(t, err)
	assert.Equal(t, runtime.StatusRunning, st)
	require.NoError(t, c.Kill(ctx, syscall.SIGKILL))
}
