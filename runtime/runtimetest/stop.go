package runtimetest

import (
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/runtime"
)

// testStop: a container that handles TERM ends on it with its own code
// well before the grace; one that ignores TERM is killed once the grace is
// over. Stopping a stopped container again does nothing.
func testStop(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	const grace = 2 * time.Second

	out := newBuffer()
	cfg := h.Config(t, "/bin/sh", "-c", "trap 'exit 42' TERM; echo trapped; sleep 1000 & wait")
	cfg.IO = runtime.IO{Stdout: out, Stderr: out}
	c := create(t, rt, NewID("stopterm"), cfg)
	require.NoError(t, c.Start(ctx))
	require.NoError(t, out.waitFor(ctx, "trapped"))
	start := time.Now()
	require.NoError(t, c.Stop(ctx, 30*time.Second))
	require.Less(t, time.Since(start), 20*time.Second, "TERM ended it, not the grace")
	es, err := c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 42, es.Code, "the container's TERM handler ran")
	require.NoError(t, c.Stop(ctx, grace), "stopping a stopped container is a no-op")

	out = newBuffer()
	cfg = h.Config(t, "/bin/sh", "-c", "trap '' TERM; echo ignoring; while true; do sleep 0.1; done")
	cfg.IO = runtime.IO{Stdout: out, Stderr: out}
	c = create(t, rt, NewID("stopkill"), cfg)
	require.NoError(t, c.Start(ctx))
	require.NoError(t, out.waitFor(ctx, "ignoring"))
	start = time.Now()
	require.NoError(t, c.Stop(ctx, grace))
	require.GreaterOrEqual(t, time.Since(start), grace, "killed only after the grace")
	es, err = c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, syscall.SIGKILL, es.Signal)
	require.Equal(t, 137, es.Code)

	created := create(t, rt, NewID("stopnew"), h.Config(t, "/bin/true"))
	require.True(t, isFailedPrecondition(created.Stop(ctx, grace)), "a created container is deleted, not stopped")
	require.True(t, isInvalidArgument(created.Stop(ctx, -time.Second)))

	if rt.Capabilities().Pause {
		c = create(t, rt, NewID("stoppaused"), h.Config(t, "/bin/sleep", "1000"))
		require.NoError(t, c.Start(ctx))
		require.NoError(t, c.Pause(ctx))
		start = time.Now()
		require.NoError(t, c.Stop(ctx, time.Minute))
		require.Less(t, time.Since(start), 30*time.Second, "a paused container is killed at once")
		st, err := c.State(ctx)
		require.NoError(t, err)
		require.Equal(t, runtime.StatusStopped, st)
	}
}
