package runtimetest

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/runtime"
)

func testPause(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	if !rt.Capabilities().Pause {
		t.Skip("backend cannot pause")
	}
	out := newBuffer()
	cfg := h.Config(t, "/bin/sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.05; done")
	cfg.IO = runtime.IO{Stdout: out, Stderr: out}
	c := create(t, rt, NewID("pause"), cfg)
	require.NoError(t, c.Start(ctx))
	require.NoError(t, out.waitFor(ctx, "tick 2\n"))
	info, err := c.Info(ctx)
	require.NoError(t, err)

	require.NoError(t, c.Pause(ctx))
	st, err := c.State(ctx)
	require.NoError(t, err)
	require.Equal(t, runtime.StatusPaused, st)
	freezer := cgroupRead(t, info.Pid, "freezer", "freezer.state", "cgroup.freeze")
	require.Contains(t, []string{"FROZEN", "1"}, freezer, "the freezer holds the container")
	// Frozen processes write nothing: the output stays the same.
	time.Sleep(200 * time.Millisecond)
	before := out.String()
	time.Sleep(300 * time.Millisecond)
	require.Equal(t, before, out.String(), "a paused container kept running")

	require.Truef(t, isFailedPrecondition(c.Pause(ctx)), "pause a paused container")
	if rt.Capabilities().Exec {
		_, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/true"}}, runtime.IO{})
		require.Truef(t, isFailedPrecondition(err), "exec in a paused container: %v", err)
	}

	require.NoError(t, c.Resume(ctx))
	st, err = c.State(ctx)
	require.NoError(t, err)
	require.Equal(t, runtime.StatusRunning, st)
	freezer = cgroupRead(t, info.Pid, "freezer", "freezer.state", "cgroup.freeze")
	require.Contains(t, []string{"THAWED", "0"}, freezer)
	n := strings.Count(out.String(), "tick")
	require.NoError(t, out.waitFor(ctx, fmt.Sprintf("tick %d\n", n+2)))
}

func testUpdate(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	if !rt.Capabilities().Update {
		t.Skip("backend cannot update resources")
	}
	c := create(t, rt, NewID("update"), h.Config(t, "/bin/sleep", "1000"))
	require.NoError(t, c.Start(ctx))
	info, err := c.Info(ctx)
	require.NoError(t, err)

	mem, shares, quota, period, pids := int64(96<<20), uint64(512), int64(50000), uint64(100000), int64(77)
	require.NoError(t, c.Update(ctx, runtime.Resources{MemoryLimit: &mem, CPUShares: &shares, CPUQuota: &quota, CPUPeriod: &period, PidsLimit: &pids}))
	require.Equal(t, strconv.FormatInt(mem, 10), cgroupRead(t, info.Pid, "memory", "memory.limit_in_bytes", "memory.max"))
	require.Equal(t, "77", cgroupRead(t, info.Pid, "pids", "pids.max", "pids.max"))
	dirs, err := cgroupDirs(info.Pid)
	require.NoError(t, err)
	if _, v1 := dirs["cpu"]; v1 {
		require.Equal(t, "512", cgroupRead(t, info.Pid, "cpu", "cpu.shares", ""))
		require.Equal(t, "50000", cgroupRead(t, info.Pid, "cpu", "cpu.cfs_quota_us", ""))
	} else {
		require.Equal(t, "50000 100000", cgroupRead(t, info.Pid, "cpu", "", "cpu.max"))
	}

	// A second update changes only what it names.
	mem2 := int64(128 << 20)
	require.NoError(t, c.Update(ctx, runtime.Resources{MemoryLimit: &mem2}))
	require.Equal(t, strconv.FormatInt(mem2, 10), cgroupRead(t, info.Pid, "memory", "memory.limit_in_bytes", "memory.max"))
	require.Equal(t, "77", cgroupRead(t, info.Pid, "pids", "pids.max", "pids.max"))

	// The limit is real: the pids limit stops a fork bomb's 78th process.
	if rt.Capabilities().Exec {
		// Room for the exec itself (an engine's helper may need several
		// threads to enter the container), not for 40 more processes.
		low := int64(25)
		require.NoError(t, c.Update(ctx, runtime.Resources{PidsLimit: &low}))
		out := shOut(ctx, t, c, "n=0; for i in $(seq 40); do sleep 2 >/dev/null 2>&1 && true & n=$((n+1)); done; echo tried $n")
		require.Contains(t, out, "fork", "forks beyond the pids limit fail: %q", out)
	}
	if rt.Capabilities().Stats {
		s, err := c.Stats(ctx)
		require.NoError(t, err)
		require.Equal(t, uint64(mem2), s.MemoryLimit)
	}
}

func testStats(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	if !rt.Capabilities().Stats {
		t.Skip("backend has no stats")
	}
	out := newBuffer()
	cfg := h.Config(t, "/bin/sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo busy-done; exec sleep 1000")
	cfg.IO = runtime.IO{Stdout: out, Stderr: out}
	c := create(t, rt, NewID("stats"), cfg)
	require.NoError(t, c.Start(ctx))
	require.NoError(t, out.waitFor(ctx, "busy-done"))
	s, err := c.Stats(ctx)
	require.NoError(t, err)
	require.Positive(t, s.MemoryUsage)
	require.Positive(t, s.CPUUsageNanos, "the busy loop used CPU")
	require.Equal(t, uint64(1), s.Pids, "only sleep runs")
	require.Positive(t, s.CPU.UserNanos+s.CPU.SystemNanos, "CPU time, split")
	require.Positive(t, s.Memory.WorkingSet)
	require.LessOrEqual(t, s.Memory.WorkingSet, s.MemoryUsage, "the working set is part of the usage")
}
