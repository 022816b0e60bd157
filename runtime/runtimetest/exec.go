package runtimetest

import (
	"context"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/runtime"
)

func testExec(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	if !rt.Capabilities().Exec {
		t.Skip("backend cannot exec")
	}
	cfg := h.Config(t, "/bin/sleep", "1000")
	cfg.Spec.Process.Env = append(cfg.Spec.Process.Env, "FROM_CONTAINER=yes")
	c := create(t, rt, NewID("exec"), cfg)
	require.NoError(t, c.Start(ctx))
	execProcesses(ctx, t, c)
	execIdleStdin(ctx, t, c)
	execMissingAndSignal(ctx, t, c)
	execChildHoldsOutput(ctx, t, c, rt.Capabilities().Terminal)
}

// execRun runs p in c with stdin and returns how it ended and its output.
func execRun(ctx context.Context, t *testing.T, c *runtime.Container, p *runtime.ProcessSpec, stdin io.Reader) (runtime.ExitStatus, string, string) {
	t.Helper()
	stdout, stderr := newBuffer(), newBuffer()
	proc, err := c.Exec(ctx, p, runtime.IO{Stdin: stdin, Stdout: stdout, Stderr: stderr})
	require.NoError(t, err)
	es, err := proc.Wait(ctx)
	require.NoError(t, err)
	return es, stdout.String(), stderr.String()
}

// execProcesses checks what an exec'd process gets: its exit code,
// streams, environment, working directory, user, stdin, and the
// container's PID namespace.
func execProcesses(ctx context.Context, t *testing.T, c *runtime.Container) {
	run := func(p *runtime.ProcessSpec, stdin io.Reader) (runtime.ExitStatus, string, string) {
		t.Helper()
		return execRun(ctx, t, c, p, stdin)
	}
	es, _, _ := run(&runtime.ProcessSpec{Args: []string{"/bin/sh", "-c", "exit 3"}}, nil)
	require.Equal(t, 3, es.Code)
	es, out, errOut := run(&runtime.ProcessSpec{Args: []string{"/bin/sh", "-c", "echo out; echo err >&2"}}, nil)
	require.Equal(t, 0, es.Code)
	require.Equal(t, "out\n", out)
	require.Equal(t, "err\n", errOut)
	_, out, _ = run(&runtime.ProcessSpec{Args: []string{"/bin/sh", "-c", "echo $FROM_CONTAINER $EXTRA; pwd"}, Env: []string{"EXTRA=given"}, Cwd: "/tmp"}, nil)
	require.Equal(t, "yes given\n/tmp\n", out)
	_, out, _ = run(&runtime.ProcessSpec{Args: []string{"/bin/sh", "-c", "id -u; id -g"}, User: &specs.User{UID: 1000, GID: 1001}}, nil)
	require.Equal(t, "1000\n1001\n", out)
	_, out, _ = run(&runtime.ProcessSpec{Args: []string{"/bin/cat"}}, strings.NewReader("through stdin\n"))
	require.Equal(t, "through stdin\n", out)
	// Exec'd processes share the container's PID namespace: sleep is init.
	_, out, _ = run(&runtime.ProcessSpec{Args: []string{"/bin/cat", "/proc/1/cmdline"}}, nil)
	require.Equal(t, "/bin/sleep\x001000\x00", out)
}

// execIdleStdin: a process that never reads its stdin ends, and so does
// its Wait, while the caller's stdin stays open and silent (a terminal, a
// client's stream): the tenant's process decides when it exits.
func execIdleStdin(ctx context.Context, t *testing.T, c *runtime.Container) {
	idle, idleW := io.Pipe()
	t.Cleanup(func() { idleW.Close() })
	quick, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/true"}}, runtime.IO{Stdin: idle})
	require.NoError(t, err)
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	es, err := quick.Wait(wctx)
	wcancel()
	require.NoError(t, err, "Wait of an exited process waits for the caller's stdin")
	require.Equal(t, 0, es.Code)
}

// execMissingAndSignal: a missing binary is the caller's mistake,
// reported as one (an invalid-argument error, or the shell's 126/127 exit
// codes), and the container lives on; an exec'd process takes signals.
func execMissingAndSignal(ctx context.Context, t *testing.T, c *runtime.Container) {
	missing, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/no/such/binary"}}, runtime.IO{})
	if err != nil {
		require.Truef(t, isInvalidArgument(err), "exec of a missing binary: %v", err)
	} else {
		es, err := missing.Wait(ctx)
		require.NoError(t, err)
		require.Contains(t, []int{126, 127}, es.Code, "exec of a missing binary")
	}
	st, err := c.State(ctx)
	require.NoError(t, err)
	require.Equal(t, runtime.StatusRunning, st)

	proc, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/sleep", "1000"}}, runtime.IO{})
	require.NoError(t, err)
	require.NoError(t, proc.Signal(ctx, syscall.SIGKILL))
	es, err := proc.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 137, es.Code)
}

// execChildHoldsOutput: a process that leaves a child behind holding its
// output (a daemon, "cmd &") is waited for until it exits, not until the
// child does; nor does a child that keeps writing hold up Wait. Its
// output up to its exit is all there. With a terminal too, when the
// backend has them.
func execChildHoldsOutput(ctx context.Context, t *testing.T, c *runtime.Container, terminal bool) {
	for _, tty := range []bool{false, true} {
		if tty && !terminal {
			continue
		}
		for _, script := range []string{
			"sleep 100000 & echo hi",
			"(while :; do echo x; sleep 0.1; done) & echo hi",
		} {
			stdout, stderr := newBuffer(), newBuffer()
			pio := runtime.IO{Stdout: stdout, Stderr: stderr}
			if tty {
				pio.Stderr = nil
			}
			proc, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/sh", "-c", script}, Terminal: tty}, pio)
			require.NoError(t, err)
			es, err := proc.Wait(ctx)
			require.NoErrorf(t, err, "Wait of %q (terminal %v) waits for its child", script, tty)
			require.Equal(t, 0, es.Code, script)
			require.Contains(t, stdout.String(), "hi", script)
		}
	}
}
