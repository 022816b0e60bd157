package runtimetest

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/runtime"
)

func testLifecycle(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	id := NewID("life")
	out := newBuffer()
	cfg := h.Config(t, "/bin/sh", "-c", "echo started; read x; exit 7")
	pr, pw := io.Pipe()
	cfg.IO = runtime.IO{Stdin: pr, Stdout: out, Stderr: out}
	c := create(t, rt, id, cfg)

	st, err := c.State(ctx)
	require.NoError(t, err)
	require.Equal(t, runtime.StatusCreated, st)
	list, err := rt.List(ctx)
	require.NoError(t, err)
	require.True(t, slices.ContainsFunc(list, func(i *runtime.Info) bool { return i.ID == id }), "List misses %s", id)

	require.NoError(t, c.Start(ctx))
	require.NoError(t, out.waitFor(ctx, "started"))
	info, err := c.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, runtime.StatusRunning, info.Status)
	require.Positive(t, info.Pid)
	cgroups := ownCgroups(t, info.Pid)
	require.NotEmpty(t, cgroups, "the container has no cgroup of its own")

	_, _ = pw.Write([]byte("go\n"))
	pw.Close()
	es, err := c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 7, es.Code)
	require.Zero(t, es.Signal)

	info, err = c.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, runtime.StatusStopped, info.Status)
	require.NotNil(t, info.Exit)
	require.Equal(t, 7, info.Exit.Code)
	// Wait on a stopped container returns its exit again.
	es, err = c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 7, es.Code)

	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	requireGone(t, h, rt, id, cgroups)
}

func testOutput(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	stdout, stderr := newBuffer(), newBuffer()
	cfg := h.Config(t, "/bin/sh", "-c", "echo to-out; echo to-err >&2; echo $BERTH_TEST")
	cfg.Spec.Process.Env = append(cfg.Spec.Process.Env, "BERTH_TEST=env-seen")
	cfg.IO = runtime.IO{Stdout: stdout, Stderr: stderr}
	c := create(t, rt, NewID("out"), cfg)
	require.NoError(t, c.Start(ctx))
	es, err := c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 0, es.Code)
	require.Equal(t, "to-out\nenv-seen\n", stdout.String())
	require.Equal(t, "to-err\n", stderr.String())
}

func testLogs(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	if !rt.Capabilities().Logs {
		t.Skip("backend keeps no logs")
	}
	c := create(t, rt, NewID("logs"), h.Config(t, "/bin/sh", "-c", "echo line-one; echo line-two >&2"))
	require.NoError(t, c.Start(ctx))
	_, err := c.Wait(ctx)
	require.NoError(t, err)
	rc, err := c.Logs(ctx)
	require.NoError(t, err)
	defer rc.Close()
	b, err := io.ReadAll(rc)
	require.NoError(t, err)
	require.Contains(t, string(b), "line-one\n")
	require.Contains(t, string(b), "line-two\n")

	// Given writers, the output reaches them and is kept besides.
	out, errb := newBuffer(), newBuffer()
	cfg := h.Config(t, "/bin/sh", "-c", "echo attached-out; echo attached-err >&2")
	cfg.IO = runtime.IO{Stdout: out, Stderr: errb}
	c = create(t, rt, NewID("logs"), cfg)
	require.NoError(t, c.Start(ctx))
	_, err = c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, "attached-out\n", out.String())
	require.Equal(t, "attached-err\n", errb.String())
	rc2, err := c.Logs(ctx)
	require.NoError(t, err)
	defer rc2.Close()
	b, err = io.ReadAll(rc2)
	require.NoError(t, err)
	require.Contains(t, string(b), "attached-out\n")
	require.Contains(t, string(b), "attached-err\n")
}

func testKillTERM(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	out := newBuffer()
	// A trap interrupts the shell's wait at once; the init only gets
	// signals it handles, so wait until the trap is set.
	cfg := h.Config(t, "/bin/sh", "-c", "trap 'exit 42' TERM; echo trapped; sleep 1000 & wait")
	cfg.IO = runtime.IO{Stdout: out, Stderr: out}
	c := create(t, rt, NewID("term"), cfg)
	require.NoError(t, c.Start(ctx))
	require.NoError(t, out.waitFor(ctx, "trapped"))
	require.NoError(t, c.Kill(ctx, syscall.SIGTERM))
	es, err := c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 42, es.Code, "the container's TERM handler ran")
}

func testKillKILL(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	c := create(t, rt, NewID("kill"), h.Config(t, "/bin/sleep", "1000"))
	require.NoError(t, c.Start(ctx))
	require.NoError(t, c.Kill(ctx, syscall.SIGKILL))
	es, err := c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, syscall.SIGKILL, es.Signal)
	require.Equal(t, 137, es.Code)
}

func testRestart(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	id := NewID("restart")
	cfg := h.Config(t, "/bin/sh", "-c", "trap 'exit 9' USR1; sleep 1000 & wait")
	create(t, rt, id, cfg)
	c, err := rt.Get(ctx, id)
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx))

	// A restarted program finds the container and controls it.
	rt2 := h.Reopen(t, rt)
	list, err := rt2.List(ctx)
	require.NoError(t, err)
	require.True(t, slices.ContainsFunc(list, func(i *runtime.Info) bool { return i.ID == id && i.Status == runtime.StatusRunning }), "reopened runtime lists the running container")
	c2, err := rt2.Get(ctx, id)
	require.NoError(t, err)
	info, err := c2.Info(ctx)
	require.NoError(t, err)
	cgroups := ownCgroups(t, info.Pid)
	if rt2.Capabilities().Exec {
		out := newBuffer()
		p, err := c2.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/echo", "still here"}}, runtime.IO{Stdout: out})
		require.NoError(t, err)
		_, err = p.Wait(ctx)
		require.NoError(t, err)
		require.Equal(t, "still here\n", out.String())
	}
	// Wait in the first runtime while the second kills.
	done := make(chan runtime.ExitStatus, 1)
	go func() {
		es, err := c.Wait(ctx)
		assert.NoError(t, err)
		done <- es
	}()
	require.NoError(t, c2.Kill(ctx, syscall.SIGUSR1))
	es, err := c2.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 9, es.Code)
	require.Equal(t, 9, (<-done).Code)
	require.NoError(t, c2.Delete(ctx, runtime.DeleteOptions{}))
	requireGone(t, h, rt2, id, cgroups)
	requireGone(t, h, rt, id, cgroups)
}

func testForceDelete(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	for _, pause := range []bool{false, true} {
		if pause && !rt.Capabilities().Pause {
			continue
		}
		id := NewID("force")
		c := create(t, rt, id, h.Config(t, "/bin/sleep", "1000"))
		require.NoError(t, c.Start(ctx))
		info, err := c.Info(ctx)
		require.NoError(t, err)
		cgroups := ownCgroups(t, info.Pid)
		if pause {
			require.NoError(t, c.Pause(ctx))
		}
		require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{Force: true}))
		requireGone(t, h, rt, id, cgroups)
	}
}

func testDeleteCreated(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	id := NewID("created")
	c := create(t, rt, id, h.Config(t, "/bin/sleep", "1000"))
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	requireGone(t, h, rt, id, nil)
}

func testConcurrent(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	ids := make([]string, n)
	for i := range n {
		ids[i] = NewID(fmt.Sprintf("conc%02d", i))
		cfg := h.Config(t, "/bin/sh", "-c", "echo $NUM")
		cfg.Spec.Process.Env = append(cfg.Spec.Process.Env, fmt.Sprintf("NUM=%d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = func() error {
				out := newBuffer()
				cfg.IO = runtime.IO{Stdout: out, Stderr: out}
				c, err := rt.Create(ctx, ids[i], cfg)
				if err != nil {
					return err
				}
				defer c.Delete(context.Background(), runtime.DeleteOptions{Force: true})
				if err := c.Start(ctx); err != nil {
					return err
				}
				es, err := c.Wait(ctx)
				if err != nil {
					return err
				}
				if es.Code != 0 || out.String() != fmt.Sprintf("%d\n", i) {
					return fmt.Errorf("exit %d, output %q", es.Code, out.String())
				}
				return c.Delete(ctx, runtime.DeleteOptions{})
			}()
		}()
	}
	wg.Wait()
	for i, err := range errs {
		require.NoErrorf(t, err, "container %s", ids[i])
	}
	for _, id := range ids {
		requireGone(t, h, rt, id, nil)
	}
}
