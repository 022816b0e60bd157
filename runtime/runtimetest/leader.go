package runtimetest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/runtime"
)

// A container whose init ended its main thread alone (its other threads
// live on, the leader a zombie) is still deleted, with nothing left: the
// engine may take it for stopped, but its processes are killed and its
// cgroups removed.
func testLeaderExitedAlone(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt, c, marker := startLeaderExited(t, h)
	engineLeft := engineLeftovers(t, h, rt, c.ID())
	// The leader's own cgroup file no longer tells (it is a zombie):
	// the harness's leftovers name the container's cgroups; nor does
	// the engine keep anything of it (Docker's containerd task and its
	// shim).
	requireDeletedWhole(ctx, t, h, rt, c, marker, engineLeft)
}

// startLeaderExited starts a container whose init ends its main thread
// alone while its other threads, whose command line holds marker, run on.
func startLeaderExited(t *testing.T, h Harness) (rt *runtime.Runtime, c *runtime.Container, marker string) {
	ctx := testContext(t)
	rt = h.Open(t)
	out := newBuffer()
	marker = NewID("leader-exits")
	cfg := h.Config(t, tenantDir+"/tenant", "leader-exits", marker)
	withTenant(t, cfg)
	cfg.IO = runtime.IO{Stdout: out, Stderr: out}
	c, err := rt.Create(ctx, NewID("leader"), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Delete(context.Background(), runtime.DeleteOptions{Force: true}) })
	require.NoError(t, c.Start(ctx))
	require.NoError(t, out.waitFor(ctx, "leader exiting"))
	require.NotEmpty(t, threadsWith(marker), "the tenant's threads run on")
	return rt, c, marker
}

// requireDeletedWhole deletes c with force and checks that nothing is
// left of it: not in berth, not in the engine (engineLeft), and no thread
// whose command line holds marker.
func requireDeletedWhole(ctx context.Context, t *testing.T, h Harness, rt *runtime.Runtime, c *runtime.Container, marker string, engineLeft func() []string) {
	t.Helper()
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{Force: true}))
	requireGone(t, h, rt, c.ID(), nil)
	require.Empty(t, threadsWith(marker), "the container's threads outlive its deletion")
	require.Empty(t, engineLeft(), "the engine keeps what served %s", c.ID())
}

// threadsWith lists the host's threads whose command line holds marker.
func threadsWith(marker string) []string {
	var out []string
	tasks, _ := filepath.Glob("/proc/[0-9]*/task/[0-9]*")
	for _, t := range tasks {
		if b, err := os.ReadFile(filepath.Join(t, "cmdline")); err == nil && strings.Contains(string(b), marker) {
			out = append(out, t)
		}
	}
	return out
}

// The same container stopped: Stop delivers SIGTERM to what is left of
// the init (the leader a zombie, the tenant's threads running on) and
// returns once they are gone; the container is then stopped, with the
// real exit, and its deletion leaves nothing, in the engine either.
func testLeaderExitedAloneStopped(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt, c, marker := startLeaderExited(t, h)
	id := c.ID()
	engineLeft := engineLeftovers(t, h, rt, id)
	require.NoError(t, c.Stop(ctx, time.Minute))
	require.Empty(t, threadsWith(marker), "the tenant's threads outlive Stop")
	st, err := c.State(ctx)
	require.NoError(t, err)
	require.Equal(t, runtime.StatusStopped, st)
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	requireGone(t, h, rt, id, nil)
	require.Empty(t, engineLeft(), "the engine keeps what served %s", id)
}

// An exec'd process that ended its main thread alone (its other threads
// running on) is still signalled whole, waited for, and leaves nothing
// when the container is deleted.
func testExecLeaderExitedAlone(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	cfg := h.Config(t, "/bin/sleep", "1000")
	withTenant(t, cfg)
	id := NewID("exec-leader")
	c, err := rt.Create(ctx, id, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Delete(context.Background(), runtime.DeleteOptions{Force: true}) })
	require.NoError(t, c.Start(ctx))
	engineLeft := engineLeftovers(t, h, rt, id)
	marker := NewID("exec-leader-exits")
	out := newBuffer()
	p, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{tenantDir + "/tenant", "leader-exits", marker}}, runtime.IO{Stdout: out, Stderr: out})
	require.NoError(t, err)
	require.NoError(t, out.waitFor(ctx, "leader exiting"))
	require.NotEmpty(t, threadsWith(marker), "the tenant's threads run on")
	require.NoError(t, p.Signal(ctx, syscall.SIGKILL))
	es, err := p.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 137, es.Code)
	require.Empty(t, threadsWith(marker), "the exec's threads outlive its Wait")
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{Force: true}))
	requireGone(t, h, rt, id, nil)
	require.Empty(t, engineLeft(), "the engine keeps what served %s", id)
}

// Pausing the same container either freezes it or is refused as
// failed-precondition (runc takes the zombie init for gone); either way
// it is then deleted whole, with nothing left in the engine.
func testLeaderExitedAlonePaused(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt, c, marker := startLeaderExited(t, h)
	engineLeft := engineLeftovers(t, h, rt, c.ID())
	if err := c.Pause(ctx); err != nil {
		require.Truef(t, isFailedPrecondition(err), "Pause: %v", err)
	}
	requireDeletedWhole(ctx, t, h, rt, c, marker, engineLeft)
}

// The same container frozen as its leader ended (a pause that raced the
// tenant's exit; the freezer is written here directly, as runc refuses to
// pause a zombie init): a forced delete still kills the frozen threads,
// thawing them, and ends, with nothing left.
func testLeaderExitedAloneFrozen(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt, c, marker := startLeaderExited(t, h)
	engineLeft := engineLeftovers(t, h, rt, c.ID())
	threads := threadsWith(marker)
	b, err := os.ReadFile(filepath.Join(threads[len(threads)-1], "cgroup"))
	require.NoError(t, err)
	freezer := ""
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.SplitN(line, ":", 3); len(f) == 3 && f[1] == "freezer" {
			freezer = filepath.Join("/sys/fs/cgroup/freezer", f[2], "freezer.state")
		}
	}
	if freezer == "" {
		t.Skip("needs cgroup v1's freezer")
	}
	require.NoError(t, os.WriteFile(freezer, []byte("FROZEN"), 0))
	require.Eventually(t, func() bool { b, _ := os.ReadFile(freezer); return strings.TrimSpace(string(b)) == "FROZEN" }, 10*time.Second, 10*time.Millisecond)
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	requireDeletedWhole(dctx, t, h, rt, c, marker, engineLeft)
}
