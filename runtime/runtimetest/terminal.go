package runtimetest

import (
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/runtime"
)

// attach runs c.Attach in the background; its result comes on the channel.
func attach(ctx context.Context, c *runtime.Container, pio runtime.IO) <-chan error {
	done := make(chan error, 1)
	go func() { done <- c.Attach(ctx, pio) }()
	return done
}

// result waits for an Attach's result.
func result(ctx context.Context, t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		t.Fatalf("waiting for Attach to return: %v", ctx.Err())
		return nil
	}
}

// blockedWriter blocks every Write until released, as a client that stops
// reading does.
type blockedWriter struct {
	entered chan struct{}
	once    sync.Once
	release chan struct{}
}

func newBlockedWriter() *blockedWriter {
	return &blockedWriter{entered: make(chan struct{}), release: make(chan struct{})}
}

func (w *blockedWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.entered) })
	<-w.release
	return len(p), nil
}

// requireNoContainer checks that a refused create left nothing behind.
func requireNoContainer(ctx context.Context, t *testing.T, h Harness, rt *runtime.Runtime, id string) {
	t.Helper()
	_, err := rt.Get(ctx, id)
	require.Truef(t, isNotFound(err), "a refused create leaves no container: %v", err)
	require.Empty(t, h.Leftovers(t, rt, id))
}

// LateTerminalSize is what a harness implements whose engine cannot size
// a terminal before its process runs, only as it starts (Docker before
// API 1.42): the tests then let the process wait for its size, a few
// seconds at most, before they read it.
type LateTerminalSize interface {
	LateTerminalSize() bool
}

// sttySize is a shell command that prints the terminal's size as the
// process first sees it, or, for a harness whose engine sizes it late,
// once it is set.
func sttySize(h Harness) string {
	if l, ok := h.(LateTerminalSize); ok && l.LateTerminalSize() {
		// busybox's stty prints an error, and succeeds, on a terminal
		// of no size yet.
		return `i=0; while [ $i -lt 100 ]; do s=$(stty size 2>/dev/null); case "$s" in [1-9]*" "[1-9]*) break ;; esac; sleep 0.05; i=$((i+1)); done; echo "$s"`
	}
	return "stty size"
}

// An init with a terminal: its streams are the terminal (what it writes
// comes out with the terminal's "\r\n", stderr on stdout), at the size
// the spec says, and its exit code is kept.
func testTerminalRun(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	cfg := h.Config(t, "/bin/sh", "-c", `tty; test -t 0 && test -t 1 && test -t 2 && echo all-terminals; `+sttySize(h)+`; echo to-err >&2; exit 5`)
	cfg.Spec.Process.Terminal = true
	cfg.Spec.Process.ConsoleSize = &specs.Box{Height: 33, Width: 111}
	if !rt.Capabilities().Terminal {
		id := NewID("tty")
		_, err := rt.Create(ctx, id, cfg)
		require.Truef(t, isNotImplemented(err), "a terminal without the capability: %v", err)
		requireNoContainer(ctx, t, h, rt, id)
		t.Skip("backend has no terminals")
	}
	out, errOut := newBuffer(), newBuffer()
	cfg.IO = runtime.IO{Stdout: out, Stderr: errOut}
	c := create(t, rt, NewID("tty"), cfg)
	require.NoError(t, c.Start(ctx))
	es, err := c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 5, es.Code)
	require.Regexp(t, `^/dev/pts/[0-9]+\r\nall-terminals\r\n33 111\r\nto-err\r\n$`, out.String())
	require.Empty(t, errOut.String(), "with a terminal, everything is stdout")
	if rt.Capabilities().Logs {
		rc, err := c.Logs(ctx)
		require.NoError(t, err)
		b, err := io.ReadAll(rc)
		rc.Close()
		require.NoError(t, err)
		require.Contains(t, string(b), "33 111\r\nto-err\r\n", "the kept log has the terminal's output")
	}

	// Without writers the output is kept all the same, and the exit code.
	cfg = h.Config(t, "/bin/sh", "-c", "test -t 1 && echo detached-terminal; exit 6")
	cfg.Spec.Process.Terminal = true
	c = create(t, rt, NewID("tty-detached"), cfg)
	require.NoError(t, c.Start(ctx))
	es, err = c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 6, es.Code)
	if rt.Capabilities().Logs {
		rc, err := c.Logs(ctx)
		require.NoError(t, err)
		b, err := io.ReadAll(rc)
		rc.Close()
		require.NoError(t, err)
		require.Equal(t, "detached-terminal\r\n", string(b))
	}
}

// An exec'd process with a terminal: the same, plus what is typed into
// it (echoed by the terminal), Resize while it runs, and ^C typed into it
// interrupting it (SIGINT from the terminal's line discipline: 130).
func testTerminalExec(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	if !rt.Capabilities().Exec {
		t.Skip("backend cannot exec")
	}
	c := create(t, rt, NewID("tty-exec"), h.Config(t, "/bin/sleep", "1000"))
	require.NoError(t, c.Start(ctx))
	if !rt.Capabilities().Terminal {
		_, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/true"}, Terminal: true}, runtime.IO{})
		require.Truef(t, isNotImplemented(err), "exec with a terminal without the capability: %v", err)
		t.Skip("backend has no terminals")
	}
	out, errOut := newBuffer(), newBuffer()
	p, err := c.Exec(ctx, &runtime.ProcessSpec{
		Args:     []string{"/bin/sh", "-c", "test -t 0 && test -t 1 && test -t 2 && echo terminal; " + sttySize(h) + "; echo err >&2; exit 3"},
		Terminal: true, ConsoleSize: &specs.Box{Height: 24, Width: 80},
	}, runtime.IO{Stdout: out, Stderr: errOut})
	require.NoError(t, err)
	es, err := p.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 3, es.Code)
	require.Equal(t, "terminal\r\n24 80\r\nerr\r\n", out.String())
	require.Empty(t, errOut.String())

	// No streams at all: the code still comes back.
	p, err = c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/sh", "-c", "test -t 0 && exit 7"}, Terminal: true}, runtime.IO{})
	require.NoError(t, err)
	es, err = p.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 7, es.Code)

	in, inW := io.Pipe()
	t.Cleanup(func() { inW.Close() })
	out = newBuffer()
	p, err = c.Exec(ctx, &runtime.ProcessSpec{
		Args:     []string{"/bin/sh", "-c", `echo ready; read line; echo "got:$line"; stty size; echo waiting; sleep 1000`},
		Terminal: true,
	}, runtime.IO{Stdin: in, Stdout: out})
	require.NoError(t, err)
	require.NoError(t, out.waitFor(ctx, "ready\r\n"))
	require.NoError(t, p.Resize(ctx, specs.Box{Height: 50, Width: 132}))
	_, err = inW.Write([]byte("hello\n"))
	require.NoError(t, err)
	require.NoError(t, out.waitFor(ctx, "waiting\r\n"))
	require.Equal(t, "ready\r\nhello\r\ngot:hello\r\n50 132\r\nwaiting\r\n", out.String(), "typed input is echoed, then read")
	_, err = inW.Write([]byte{3}) // ^C
	require.NoError(t, err)
	es, err = p.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 130, es.Code, "^C typed into the terminal interrupts its process")
	require.Equal(t, syscall.SIGINT, es.Signal)

	// A process without a terminal cannot be resized.
	p, err = c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/sleep", "1000"}}, runtime.IO{})
	require.NoError(t, err)
	err = p.Resize(ctx, specs.Box{Height: 10, Width: 10})
	require.Truef(t, isFailedPrecondition(err), "resize without a terminal: %v", err)
	require.NoError(t, p.Signal(ctx, syscall.SIGKILL))
	_, err = p.Wait(ctx)
	require.NoError(t, err)
}

// A process that closes its terminal ends its output, not its life: its
// exit code still comes back, and nothing hangs, for an init and an
// exec'd process alike.
func testTerminalClosed(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	if !rt.Capabilities().Terminal {
		t.Skip("backend has no terminals")
	}
	const script = "echo bye; exec >&- 2>&- <&-; sleep 1; exit 4"
	out := newBuffer()
	cfg := h.Config(t, "/bin/sh", "-c", script)
	cfg.Spec.Process.Terminal = true
	cfg.IO = runtime.IO{Stdout: out}
	c := create(t, rt, NewID("tty-closed"), cfg)
	require.NoError(t, c.Start(ctx))
	es, err := c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 4, es.Code)
	require.Equal(t, "bye\r\n", out.String())

	if !rt.Capabilities().Exec {
		return
	}
	c = create(t, rt, NewID("tty-closed-exec"), h.Config(t, "/bin/sleep", "1000"))
	require.NoError(t, c.Start(ctx))
	out = newBuffer()
	p, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/sh", "-c", script}, Terminal: true}, runtime.IO{Stdout: out})
	require.NoError(t, err)
	es, err = p.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 4, es.Code)
	require.Equal(t, "bye\r\n", out.String())
}

// What a container's terminal reaches: nothing of the host's. Its
// terminal comes from its own devpts instance, none of its processes
// holds a socket (the engine's control socket is nowhere in its view),
// and input pushed into the terminal (TIOCSTI, where the kernel still
// allows it) reaches the container's own process only.
func testTerminalHostile(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	if !rt.Capabilities().Terminal {
		t.Skip("backend has no terminals")
	}
	script := `echo "sockets:$(find / \( -path /proc -o -path /sys \) -prune -o -type s -print | wc -l)"
echo "socket-fds:$(ls -l /proc/[0-9]*/fd/ 2>/dev/null | grep -c socket:)"
echo "pts:$(stat -c %d /dev/pts/ptmx) tty:$(stat -L -c %d /proc/self/fd/0) ptys:$(ls /dev/pts | tr '\n' ' ')"
` + tenantDir + `/tenant tiocsti injected
read -t 2 line; echo "read:$line"`
	out := newBuffer()
	cfg := h.Config(t, "/bin/sh", "-c", script)
	withTenant(t, cfg)
	cfg.Spec.Process.Terminal = true
	cfg.IO = runtime.IO{Stdout: out}
	c := create(t, rt, NewID("tty-hostile"), cfg)
	require.NoError(t, c.Start(ctx))
	es, err := c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 0, es.Code, "output: %q", out.String())
	got := strings.ReplaceAll(out.String(), "\r\n", "\n")
	require.Contains(t, got, "sockets:0\n", "no socket file in the container's view")
	require.Contains(t, got, "socket-fds:0\n", "no process of the container holds a socket")
	m := regexp.MustCompile(`pts:(\d+) tty:(\d+) ptys:(.*)\n`).FindStringSubmatch(got)
	require.NotNil(t, m, "output: %q", got)
	require.Equal(t, m[1], m[2], "the terminal is of the container's own devpts")
	require.Equal(t, "0 ptmx ", m[3], "the container's devpts holds its terminal alone")
	var host unix.Stat_t
	if unix.Stat("/dev/pts/ptmx", &host) == nil {
		require.NotEqual(t, fmt.Sprint(host.Dev), m[1], "not the host's devpts")
	}
	switch {
	case strings.Contains(got, "tiocsti: ok\n"):
		require.Contains(t, got, "read:injected\n", "pushed input reaches the container's own reader")
	default:
		// The kernel refuses it (dev.tty.legacy_tiocsti=0 and no
		// CAP_SYS_ADMIN): nothing was pushed.
		require.Regexp(t, `tiocsti: E[A-Z]+\n`, got)
		require.Contains(t, got, "read:\n")
	}
	if b, err := os.ReadFile("/proc/sys/dev/tty/legacy_tiocsti"); err == nil {
		t.Logf("dev.tty.legacy_tiocsti=%s; %s", strings.TrimSpace(string(b)), regexp.MustCompile(`tiocsti: [A-Za-z]+`).FindString(got))
	}
}

// tickScript writes "tick-N" on stdout and "etick-N" on stderr ten times
// a second; USR1 has it say bye on both and exit 7.
const tickScript = `trap 'echo bye; echo bye-err >&2; exit 7' USR1; i=0; while :; do echo tick-$i; echo etick-$i >&2; i=$((i+1)); sleep 0.1; done`

// requireTicks checks that s is consecutive "<prefix>N" lines, then last.
func requireTicks(t *testing.T, s, prefix, last string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	require.NotEmpty(t, lines)
	require.Equal(t, last, lines[len(lines)-1], "output %q", s)
	lines = lines[:len(lines)-1]
	require.NotEmpty(t, lines, "output %q", s)
	first, err := strconv.Atoi(strings.TrimPrefix(lines[0], prefix))
	require.NoError(t, err, "output %q", s)
	for i, l := range lines {
		require.Equal(t, fmt.Sprintf("%s%d", prefix, first+i), l, "no line lost or added")
	}
}

// Attachments from this runtime and from another one on the same state
// (another program's view) get what the init writes from then on, each
// stream to its writer, every line, until the output ends with the init:
// then Attach returns. A stopped container has nothing to attach to.
func testAttach(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	c := create(t, rt, NewID("attach"), h.Config(t, "/bin/sh", "-c", tickScript))
	require.NoError(t, c.Start(ctx))
	if !rt.Capabilities().Attach {
		err := c.Attach(ctx, runtime.IO{Stdout: io.Discard})
		require.Truef(t, isNotImplemented(err), "attach without the capability: %v", err)
		t.Skip("backend cannot attach")
	}
	rt2 := h.Reopen(t, rt)
	c2, err := rt2.Get(ctx, c.ID())
	require.NoError(t, err)
	out1, err1 := newBuffer(), newBuffer()
	done1 := attach(ctx, c2, runtime.IO{Stdout: out1, Stderr: err1})
	out2 := newBuffer()
	done2 := attach(ctx, c, runtime.IO{Stdout: out2})
	require.NoError(t, out1.waitFor(ctx, "tick-"))
	require.NoError(t, err1.waitFor(ctx, "etick-"))
	require.NoError(t, out2.waitFor(ctx, "tick-"))
	require.NoError(t, c.Kill(ctx, syscall.SIGUSR1))
	es, err := c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 7, es.Code)
	require.NoError(t, result(ctx, t, done1))
	require.NoError(t, result(ctx, t, done2))
	requireTicks(t, out1.String(), "tick-", "bye")
	requireTicks(t, err1.String(), "etick-", "bye-err")
	requireTicks(t, out2.String(), "tick-", "bye")

	err = c2.Attach(ctx, runtime.IO{Stdout: io.Discard})
	require.Truef(t, isFailedPrecondition(err), "attach to a stopped container: %v", err)
}

// Input: attachments feed a standard input kept open for them (OpenStdin),
// and both get the output; the end of one's input closes nothing, unless
// StdinOnce: then the first end closes it, and the init sees its end of
// file. An init with a terminal kept open takes what is typed, and Resize
// changes its size.
func testAttachStdin(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	cfg := h.Config(t, "/bin/cat")
	cfg.OpenStdin = true
	if !rt.Capabilities().Attach {
		id := NewID("stdin")
		_, err := rt.Create(ctx, id, cfg)
		require.Truef(t, isNotImplemented(err), "an open stdin without the capability: %v", err)
		requireNoContainer(ctx, t, h, rt, id)
		t.Skip("backend cannot attach")
	}
	c := create(t, rt, NewID("stdin"), cfg)
	require.NoError(t, c.Start(ctx))
	in1, in1W := io.Pipe()
	t.Cleanup(func() { in1W.Close() })
	out1 := newBuffer()
	ctx1, cancel1 := context.WithCancel(ctx)
	defer cancel1()
	done1 := attach(ctx1, c, runtime.IO{Stdin: in1, Stdout: out1})
	_, err := in1W.Write([]byte("one\n"))
	require.NoError(t, err)
	require.NoError(t, out1.waitFor(ctx, "one\n"))
	require.NoError(t, in1W.Close(), "the end of the input")
	out2 := newBuffer()
	ctx2, cancel2 := context.WithCancel(ctx)
	defer cancel2()
	done2 := attach(ctx2, c, runtime.IO{Stdin: strings.NewReader("two\n"), Stdout: out2})
	require.NoError(t, out2.waitFor(ctx, "two\n"), "standard input is still open")
	require.NoError(t, out1.waitFor(ctx, "one\ntwo\n"), "every attachment gets all the output")
	require.NoError(t, c.Kill(ctx, syscall.SIGKILL))
	es, err := c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 137, es.Code)
	require.NoError(t, result(ctx, t, done1))
	require.NoError(t, result(ctx, t, done2))
	require.Equal(t, "two\n", out2.String())

	// StdinOnce: the first attachment's input ends, and so does the
	// init's.
	cfg = h.Config(t, "/bin/sh", "-c", "cat; echo eof-seen; exit 6")
	cfg.OpenStdin, cfg.StdinOnce = true, true
	c = create(t, rt, NewID("stdin-once"), cfg)
	require.NoError(t, c.Start(ctx))
	out := newBuffer()
	require.NoError(t, c.Attach(ctx, runtime.IO{Stdin: strings.NewReader("only\n"), Stdout: out}))
	require.Equal(t, "only\neof-seen\n", out.String())
	es, err = c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 6, es.Code)

	if !rt.Capabilities().Terminal {
		return
	}
	cfg = h.Config(t, "/bin/sh")
	cfg.Spec.Process.Terminal = true
	cfg.Spec.Process.ConsoleSize = &specs.Box{Height: 20, Width: 60}
	cfg.OpenStdin = true
	c = create(t, rt, NewID("stdin-tty"), cfg)
	require.NoError(t, c.Start(ctx))
	in, inW := io.Pipe()
	t.Cleanup(func() { inW.Close() })
	out = newBuffer()
	done := attach(ctx, c, runtime.IO{Stdin: in, Stdout: out})
	_, err = inW.Write([]byte("stty size; echo $((6*7))-x\n"))
	require.NoError(t, err)
	require.NoError(t, out.waitFor(ctx, "20 60\r\n42-x\r\n"))
	require.NoError(t, c.Resize(ctx, specs.Box{Height: 40, Width: 100}))
	_, err = inW.Write([]byte("stty size; echo size-$((1+1))\n"))
	require.NoError(t, err)
	require.NoError(t, out.waitFor(ctx, "40 100\r\nsize-2\r\n"))
	_, err = inW.Write([]byte("exit 9\n"))
	require.NoError(t, err)
	es, err = c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 9, es.Code)
	require.NoError(t, result(ctx, t, done))
}

// A detach (Attach's ctx ends) leaves the container running, its input
// open, its output kept, and the attachment forgotten: what the init
// writes afterwards never reaches its writers, and what its input gets
// afterwards never reaches the init.
func testAttachDetach(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	if !rt.Capabilities().Attach {
		t.Skip("backend cannot attach")
	}
	cfg := h.Config(t, "/bin/sh", "-c", `while read line; do echo "got:$line"; done`)
	cfg.OpenStdin = true
	c := create(t, rt, NewID("detach"), cfg)
	require.NoError(t, c.Start(ctx))
	inA, inAW := io.Pipe()
	t.Cleanup(func() { inAW.Close() })
	outA := newBuffer()
	ctxA, cancelA := context.WithCancel(ctx)
	doneA := attach(ctxA, c, runtime.IO{Stdin: inA, Stdout: outA})
	_, err := inAW.Write([]byte("a\n"))
	require.NoError(t, err)
	require.NoError(t, outA.waitFor(ctx, "got:a\n"))
	cancelA()
	err = result(ctx, t, doneA)
	require.ErrorIs(t, err, context.Canceled)
	// Typed after the detach: dropped (the write returns once a reader
	// left behind took it, or when the test ends).
	go func() { _, _ = inAW.Write([]byte("late\n")) }()

	st, err := c.State(ctx)
	require.NoError(t, err)
	require.Equal(t, runtime.StatusRunning, st)
	outB := newBuffer()
	ctxB, cancelB := context.WithCancel(ctx)
	doneB := attach(ctxB, c, runtime.IO{Stdin: strings.NewReader("b\n"), Stdout: outB})
	require.NoError(t, outB.waitFor(ctx, "got:b\n"), "the engine still answers, the input is still open")
	cancelB()
	require.ErrorIs(t, result(ctx, t, doneB), context.Canceled)
	require.NotContains(t, outA.String(), "got:b", "a detached attachment gets nothing more")
	require.NotContains(t, outB.String(), "late")
	if rt.Capabilities().Logs {
		rc, err := c.Logs(ctx)
		require.NoError(t, err)
		b, err := io.ReadAll(rc)
		rc.Close()
		require.NoError(t, err)
		require.Equal(t, "got:a\ngot:b\n", string(b), "the output is still kept")
	}
	require.NoError(t, c.Kill(ctx, syscall.SIGKILL))
	_, err = c.Wait(ctx)
	require.NoError(t, err)
}

// An attachment whose writer blocks for ever holds up neither the
// container (it writes on and exits, its output kept) nor another
// attachment, which gets everything; released, it returns too.
func testAttachBlockedWriter(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	if !rt.Capabilities().Attach {
		t.Skip("backend cannot attach")
	}
	// Waits, saying so, until USR1; then writes 600 kB and exits.
	script := `trap 'go=1' USR1; while [ -z "$go" ]; do echo waiting; sleep 0.1; done
head -c 600000 /dev/zero | tr '\0' x; echo; echo last-line; exit 3`
	c := create(t, rt, NewID("blocked"), h.Config(t, "/bin/sh", "-c", script))
	require.NoError(t, c.Start(ctx))
	blocked := newBlockedWriter()
	released := false
	release := func() {
		if !released {
			released = true
			close(blocked.release)
		}
	}
	t.Cleanup(release)
	doneA := attach(ctx, c, runtime.IO{Stdout: blocked, Stderr: blocked})
	outB := newBuffer()
	doneB := attach(ctx, c, runtime.IO{Stdout: outB})
	select {
	case <-blocked.entered:
	case <-ctx.Done():
		t.Fatal("the blocked attachment never got output")
	}
	require.NoError(t, outB.waitFor(ctx, "waiting\n"))
	require.NoError(t, c.Kill(ctx, syscall.SIGUSR1))
	es, err := c.Wait(ctx)
	require.NoError(t, err, "the container is not held up")
	require.Equal(t, 3, es.Code)
	require.NoError(t, result(ctx, t, doneB))
	require.True(t, strings.HasSuffix(outB.String(), "\n"+strings.Repeat("x", 600000)+"\nlast-line\n"), "the other attachment got everything")
	if rt.Capabilities().Logs {
		rc, err := c.Logs(ctx)
		require.NoError(t, err)
		b, err := io.ReadAll(rc)
		rc.Close()
		require.NoError(t, err)
		require.True(t, strings.HasSuffix(string(b), "x\nlast-line\n"), "the output is kept")
	}
	release()
	// Whatever it says (it may have been dropped), it returns.
	_ = result(ctx, t, doneA)
}

// Misuse: a console size without a terminal, StdinOnce without OpenStdin,
// an open standard input besides one given are invalid-argument with
// nothing created; a terminal size beyond 16 bits is invalid-argument;
// resizing an init without a terminal, or attaching input to one without
// OpenStdin, is failed-precondition.
func testTerminalRefused(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	bad := map[string]func(*runtime.Config){
		"console size without a terminal": func(c *runtime.Config) { c.Spec.Process.ConsoleSize = &specs.Box{Height: 10, Width: 10} },
		"stdin once without open stdin":   func(c *runtime.Config) { c.StdinOnce = true },
		"open stdin and given stdin": func(c *runtime.Config) {
			c.OpenStdin = true
			c.IO.Stdin = strings.NewReader("x")
		},
		"console size beyond 16 bits": func(c *runtime.Config) {
			c.Spec.Process.Terminal = true
			c.Spec.Process.ConsoleSize = &specs.Box{Height: 70000, Width: 10}
		},
	}
	for name, mutate := range bad {
		cfg := h.Config(t, "/bin/true")
		mutate(cfg)
		id := NewID("tty-refused")
		_, err := rt.Create(ctx, id, cfg)
		require.Truef(t, isInvalidArgument(err), "%s: %v", name, err)
		requireNoContainer(ctx, t, h, rt, id)
	}
	c := create(t, rt, NewID("tty-refused"), h.Config(t, "/bin/sleep", "1000"))
	require.NoError(t, c.Start(ctx))
	if rt.Capabilities().Exec {
		_, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/true"}, ConsoleSize: &specs.Box{Height: 1, Width: 1}}, runtime.IO{})
		require.Truef(t, isInvalidArgument(err), "exec with a console size and no terminal: %v", err)
	}
	if !rt.Capabilities().Attach {
		return
	}
	err := c.Resize(ctx, specs.Box{Height: 10, Width: 10})
	require.Truef(t, isFailedPrecondition(err), "resize without a terminal: %v", err)
	err = c.Resize(ctx, specs.Box{Height: 10, Width: 1 << 16})
	require.Truef(t, isInvalidArgument(err), "resize beyond 16 bits: %v", err)
	err = c.Attach(ctx, runtime.IO{Stdin: strings.NewReader("x\n")})
	require.Truef(t, isFailedPrecondition(err), "input to a closed standard input: %v", err)
	st, err := c.State(ctx)
	require.NoError(t, err)
	require.Equal(t, runtime.StatusRunning, st)
}
