package docker

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/runtimetest"
)

// A restart of dockerd loses nothing of berth's record: a created, a
// running (with live-restore it keeps running, same pid) and a stopped
// container are all found again with their spec, labels and exit code, and
// a Wait begun before the restart returns the exit that follows it.
//
// It restarts the userns-remap daemon through scripts/setup-docker.sh: no
// other package's tests use that daemon, and the tests of this package run
// one top-level test at a time.
func TestDaemonRestart(t *testing.T) {
	requireDaemon(t, usernsHost)
	script, err := filepath.Abs("../../scripts/setup-docker.sh")
	require.NoError(t, err)
	_, err = os.Stat(script)
	fixture.Require(t, err == nil && usernsHost == "unix:///run/berth-docker-userns.sock",
		"restarts the userns daemon of scripts/setup-docker.sh")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	h := &harness{host: usernsHost}
	rt := h.Open(t)
	labels := map[string]string{"tier": "restart-test"}
	mk := func(prefix string, userns bool, args ...string) *runtime.Container {
		cfg := h.Config(t, args...)
		cfg.UserNamespace, cfg.Labels = userns, labels
		c, err := rt.Create(ctx, runtimetest.NewID(prefix), cfg)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Delete(context.Background(), runtime.DeleteOptions{Force: true}) })
		return c
	}
	running := mk("running", true, "/bin/sh", "-c", "trap 'exit 9' USR1; sleep 1000 & wait")
	created := mk("created", false, "/bin/true")
	stopped := mk("stopped", false, "/bin/sh", "-c", "exit 5")
	require.NoError(t, running.Start(ctx))
	require.NoError(t, stopped.Start(ctx))
	es, err := stopped.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 5, es.Code)
	before := map[string]*runtime.Info{}
	for _, c := range []*runtime.Container{running, created, stopped} {
		before[c.ID()], err = c.Info(ctx)
		require.NoError(t, err)
	}
	waited := make(chan error, 1)
	var waitedStatus runtime.ExitStatus
	go func() {
		var err error
		waitedStatus, err = running.Wait(ctx)
		waited <- err
	}()

	out, err := exec.CommandContext(ctx, script, "restart", "userns").CombinedOutput()
	require.NoError(t, err, "restart: %s", out)

	rt2 := h.Reopen(t, rt) // as a restarted berth would
	for _, r := range []*runtime.Runtime{rt, rt2} {
		list, err := r.List(ctx)
		require.NoError(t, err)
		got := map[string]*runtime.Info{}
		for _, i := range list {
			got[i.ID] = i
		}
		require.Len(t, got, 3)
		for id, b := range before {
			a := got[id]
			require.NotNil(t, a, "%s listed after the restart", id)
			require.Equal(t, b.Status, a.Status, id)
			require.Equal(t, b.Pid, a.Pid, "%s: same process (not restarted)", id)
			require.Equal(t, b.Spec, a.Spec, id)
			require.Equal(t, labels, a.Labels, id)
			require.Equal(t, b.Exit, a.Exit, id)
		}
	}
	require.Equal(t, runtime.StatusRunning, before[running.ID()].Status)
	require.Equal(t, runtime.StatusCreated, before[created.ID()].Status)
	require.Equal(t, 5, before[stopped.ID()].Exit.Code)

	c2, err := rt2.Get(ctx, running.ID())
	require.NoError(t, err)
	var buf fixture.SyncBuffer
	p, err := c2.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/cat", "/proc/self/uid_map"}}, runtime.IO{Stdout: &buf})
	require.NoError(t, err)
	_, err = p.Wait(ctx)
	require.NoError(t, err)
	require.Contains(t, buf.String(), "100000", "still in the daemon's user namespace")
	select {
	case err := <-waited:
		t.Fatalf("Wait returned across the restart while the container runs: %v", err)
	default:
	}
	require.NoError(t, c2.Kill(ctx, syscall.SIGUSR1))
	es, err = c2.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 9, es.Code)
	require.NoError(t, <-waited, "the Wait begun before the restart")
	require.Equal(t, 9, waitedStatus.Code)

	for _, c := range []*runtime.Container{running, created, stopped} {
		c, err := rt2.Get(ctx, c.ID())
		require.NoError(t, err)
		require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
		require.Empty(t, h.Leftovers(t, rt2, c.ID()))
	}
}
