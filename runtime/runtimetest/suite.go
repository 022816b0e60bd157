package runtimetest

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/volume"
)

var (
	isNotFound           = errdefs.IsNotFound
	isAlreadyExists      = errdefs.IsAlreadyExists
	isInvalidArgument    = errdefs.IsInvalidArgument
	isFailedPrecondition = errdefs.IsFailedPrecondition
	isNotImplemented     = errdefs.IsNotImplemented
)

// Run runs the conformance suite against the backend h adapts.
func Run(t *testing.T, h Harness) {
	tests := []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"Lifecycle", testLifecycle},
		{"Output", testOutput},
		{"Logs", testLogs},
		{"Errors", testErrors},
		{"KillTERM", testKillTERM},
		{"KillKILL", testKillKILL},
		{"Stop", testStop},
		{"Exec", testExec},
		{"Pause", testPause},
		{"Update", testUpdate},
		{"Stats", testStats},
		{"UserNamespace", testUserNamespace},
		{"Restart", testRestart},
		{"ForceDelete", testForceDelete},
		{"DeleteCreated", testDeleteCreated},
		{"Concurrent", testConcurrent},
		{"NotImplemented", testNotImplemented},
		{"VolumeHostMount", testVolumeHostMount},
		{"VolumeRefused", testVolumeRefused},
		{"VolumeRawBlock", testVolumeRawBlock},
		{"VolumeHotAttach", testVolumeHotAttach},
		{"VolumeReadOnlyUnchanged", testVolumeReadOnlyUnchanged},
		{"PrivilegedRefused", testPrivilegedRefused},
		{"KernelInterfaceBinds", testKernelInterfaceBinds},
		{"Seccomp", testSeccomp},
		{"RawDeviceIoctls", testRawDeviceIoctls},
		{"DeviceHandedOver", testDeviceHandedOver},
		{"LeaderExitedAlone", testLeaderExitedAlone},
		{"HotAttachPlanted", testHotAttachPlanted},
		{"HotDetachMovedVolume", testHotDetachMovedVolume},
		{"DetachUnderTenantViews", testDetachUnderTenantViews},
		{"DetachedDeviceStaysItsOwn", testDetachedDeviceStaysItsOwn},
		{"Snapshot", testSnapshot},
		{"RootDisk", testRootDisk},
		{"ColdMove", testColdMove},
		{"ImportHostile", testImportHostile},
		{"Image", testImage},
		{"CommitExportImport", testCommitExportImport},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, h)
		})
	}
}

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

func testErrors(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)

	t.Run("InvalidID", func(t *testing.T) {
		for _, id := range []string{"", "bad/id", "../escape", "-lead", strings.Repeat("a", 65), "sp ace"} {
			_, err := rt.Create(ctx, id, h.Config(t, "/bin/true"))
			require.Truef(t, isInvalidArgument(err), "Create(%q): %v", id, err)
			_, err = rt.Get(ctx, id)
			require.Truef(t, isInvalidArgument(err), "Get(%q): %v", id, err)
		}
	})
	t.Run("InvalidSpec", func(t *testing.T) {
		cfg := h.Config(t, "/bin/true")
		if cfg.Image == "" {
			// From an image, no arguments means the image's command.
			cfg.Spec.Process.Args = nil
			_, err := rt.Create(ctx, NewID("noargs"), cfg)
			require.Truef(t, isInvalidArgument(err), "no args: %v", err)
		}
		cfg = h.Config(t, "/bin/true")
		cfg.Spec.Process.Cwd = "relative"
		_, err := rt.Create(ctx, NewID("cwd"), cfg)
		require.Truef(t, isInvalidArgument(err), "relative cwd: %v", err)
		cfg = h.Config(t, "/bin/true")
		cfg.Spec = nil
		_, err = rt.Create(ctx, NewID("nospec"), cfg)
		require.Truef(t, isInvalidArgument(err), "no spec: %v", err)
	})
	t.Run("AlreadyExists", func(t *testing.T) {
		id := NewID("twice")
		create(t, rt, id, h.Config(t, "/bin/true"))
		_, err := rt.Create(ctx, id, h.Config(t, "/bin/true"))
		require.Truef(t, isAlreadyExists(err), "second Create: %v", err)
		require.Contains(t, err.Error(), id, "the error names the container")
	})
	t.Run("NotFound", func(t *testing.T) {
		id := NewID("missing")
		_, err := rt.Get(ctx, id)
		require.Truef(t, isNotFound(err), "Get: %v", err)
		require.Contains(t, err.Error(), id)
		c := create(t, rt, NewID("gone"), h.Config(t, "/bin/true"))
		require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
		for name, op := range map[string]func() error{
			"Start":  func() error { return c.Start(ctx) },
			"Kill":   func() error { return c.Kill(ctx, syscall.SIGKILL) },
			"Delete": func() error { return c.Delete(ctx, runtime.DeleteOptions{}) },
			"State":  func() error { _, err := c.State(ctx); return err },
		} {
			require.Truef(t, isNotFound(op()), "%s on a deleted container", name)
		}
	})
	t.Run("FailedPrecondition", func(t *testing.T) {
		c := create(t, rt, NewID("pre"), h.Config(t, "/bin/sleep", "1000"))
		caps := rt.Capabilities()
		if caps.Pause {
			require.Truef(t, isFailedPrecondition(c.Resume(ctx)), "resume a created container")
		}
		if caps.Exec {
			_, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/true"}}, runtime.IO{})
			require.Truef(t, isFailedPrecondition(err), "exec in a created container: %v", err)
		}
		require.NoError(t, c.Start(ctx))
		err := c.Start(ctx)
		require.Truef(t, isFailedPrecondition(err), "start a running container: %v", err)
		require.Contains(t, err.Error(), c.ID())
		require.Truef(t, isFailedPrecondition(c.Delete(ctx, runtime.DeleteOptions{})), "delete a running container without force")
		if caps.Pause {
			require.Truef(t, isFailedPrecondition(c.Resume(ctx)), "resume a running container")
		}
		require.NoError(t, c.Kill(ctx, syscall.SIGKILL))
		_, err = c.Wait(ctx)
		require.NoError(t, err)
		require.Truef(t, isFailedPrecondition(c.Kill(ctx, syscall.SIGKILL)), "kill a stopped container")
		require.Truef(t, isFailedPrecondition(c.Start(ctx)), "start a stopped container")
		if caps.Pause {
			require.Truef(t, isFailedPrecondition(c.Pause(ctx)), "pause a stopped container")
		}
		if caps.Update {
			mem := int64(64 << 20)
			require.Truef(t, isFailedPrecondition(c.Update(ctx, runtime.Resources{MemoryLimit: &mem})), "update a stopped container")
		}
	})
	t.Run("InvalidRequest", func(t *testing.T) {
		c := create(t, rt, NewID("badreq"), h.Config(t, "/bin/sleep", "1000"))
		require.Truef(t, isInvalidArgument(c.Kill(ctx, 0)), "signal 0")
		require.Truef(t, isInvalidArgument(c.Kill(ctx, 999)), "signal 999")
		if rt.Capabilities().Update {
			tiny := int64(1)
			require.Truef(t, isInvalidArgument(c.Update(ctx, runtime.Resources{MemoryLimit: &tiny})), "1-byte memory limit")
		}
		if rt.Capabilities().Exec {
			_, err := c.Exec(ctx, &runtime.ProcessSpec{}, runtime.IO{})
			require.Truef(t, isInvalidArgument(err), "exec without args: %v", err)
		}
	})
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

	run := func(p *runtime.ProcessSpec, stdin io.Reader) (runtime.ExitStatus, string, string) {
		t.Helper()
		stdout, stderr := newBuffer(), newBuffer()
		proc, err := c.Exec(ctx, p, runtime.IO{Stdin: stdin, Stdout: stdout, Stderr: stderr})
		require.NoError(t, err)
		es, err := proc.Wait(ctx)
		require.NoError(t, err)
		return es, stdout.String(), stderr.String()
	}
	es, out, _ := run(&runtime.ProcessSpec{Args: []string{"/bin/sh", "-c", "exit 3"}}, nil)
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

	// A missing binary is the caller's mistake, reported as one (an
	// invalid-argument error, or the shell's 126/127 exit codes), and the
	// container lives on.
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

	// Signal an exec'd process.
	proc, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/sleep", "1000"}}, runtime.IO{})
	require.NoError(t, err)
	require.NoError(t, proc.Signal(ctx, syscall.SIGKILL))
	es, err = proc.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 137, es.Code)
}

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
		out := newBuffer()
		p, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/sh", "-c",
			"n=0; for i in $(seq 40); do sleep 2 >/dev/null 2>&1 && true & n=$((n+1)); done; echo tried $n"}}, runtime.IO{Stdout: out, Stderr: out})
		require.NoError(t, err)
		_, err = p.Wait(ctx)
		require.NoError(t, err)
		require.Contains(t, out.String(), "fork", "forks beyond the pids limit fail: %q", out.String())
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
}

func testUserNamespace(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	if !rt.Capabilities().UserNamespace {
		cfg := h.Config(t, "/bin/true")
		cfg.UserNamespace = true
		_, err := rt.Create(ctx, NewID("nouserns"), cfg)
		require.Truef(t, isNotImplemented(err), "user namespace on a backend without them: %v", err)
		return
	}
	type result struct {
		id  string
		out string
		es  runtime.ExitStatus
		c   *runtime.Container
		rng specs.LinuxIDMapping
	}
	var results []result
	for i := 0; i < 2; i++ {
		out := newBuffer()
		cfg := h.Config(t, "/bin/sh", "-c", "cat /proc/self/uid_map; touch /userns-probe && ls -n /userns-probe && rm /userns-probe && echo wrote-rootfs; mknod /dev/probe b 7 0 && echo mknod-allowed")
		cfg.UserNamespace = true
		// Separate writers: an engine may not keep the order of stdout
		// and stderr (Docker copies them apart), and the checks read
		// stdout from its first line.
		cfg.IO = runtime.IO{Stdout: out, Stderr: newBuffer()}
		id := NewID("userns")
		c := create(t, rt, id, cfg)
		info, err := c.Info(ctx)
		require.NoError(t, err)
		require.Len(t, info.Spec.Linux.UIDMappings, 1)
		require.NoError(t, c.Start(ctx))
		es, err := c.Wait(ctx)
		require.NoError(t, err)
		results = append(results, result{id, out.String(), es, c, info.Spec.Linux.UIDMappings[0]})
	}
	for _, r := range results {
		fields := strings.Fields(r.out)
		require.GreaterOrEqual(t, len(fields), 3, "output: %q", r.out)
		require.Equal(t, "0", fields[0])
		require.Equal(t, strconv.FormatUint(uint64(r.rng.HostID), 10), fields[1], "uid_map shows the allocated block")
		require.NotEqual(t, "0", fields[1], "root in the container is not host root")
		require.Contains(t, r.out, "wrote-rootfs", "root in the container can write its root filesystem: %q", r.out)
		require.Contains(t, r.out, " 0 ", "the file belongs to root inside: %q", r.out)
		require.NotContains(t, r.out, "mknod-allowed")
	}
	a, b := results[0].rng, results[1].rng
	if rt.Capabilities().UserNamespaceShared {
		require.Equal(t, a, b, "the engine's one mapping is reported for every container")
	} else {
		require.True(t, a.HostID+a.Size <= b.HostID || b.HostID+b.Size <= a.HostID, "ID ranges overlap: %v %v", a, b)
	}
	for _, r := range results {
		require.NoError(t, r.c.Delete(ctx, runtime.DeleteOptions{}))
		requireGone(t, h, rt, r.id, nil)
	}
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

// testNotImplemented runs on every backend: each optional operation whose
// capability is false answers not-implemented, and each whose capability
// is true is served (whatever else it answers, not not-implemented).
func testNotImplemented(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	caps := rt.Capabilities()
	c := create(t, rt, NewID("noimpl"), h.Config(t, "/bin/sleep", "1000"))
	require.NoError(t, c.Start(ctx))
	mem := int64(64 << 20)
	checks := []struct {
		name string
		has  bool
		op   func() error
	}{
		{"exec", caps.Exec, func() error {
			p, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/true"}}, runtime.IO{})
			if err == nil {
				_, err = p.Wait(ctx)
			}
			return err
		}},
		{"pause", caps.Pause, func() error {
			if err := c.Pause(ctx); err != nil {
				return err
			}
			return c.Resume(ctx)
		}},
		{"update", caps.Update, func() error { return c.Update(ctx, runtime.Resources{MemoryLimit: &mem}) }},
		{"stats", caps.Stats, func() error { _, err := c.Stats(ctx); return err }},
		{"logs", caps.Logs, func() error {
			rc, err := c.Logs(ctx)
			if err == nil {
				rc.Close()
			}
			return err
		}},
		{"hot attach", caps.HotAttach, func() error {
			if err := c.AttachVolume(ctx, volume.Spec{Destination: "/noimpl", TmpfsSize: 1 << 20}); err != nil {
				return err
			}
			return c.DetachVolume(ctx, "/noimpl")
		}},
		{"resize disk", caps.DiskResize, func() error { return c.ResizeDisk(ctx, 1<<20) }}, // a shrink where served
		{"snapshot", caps.Snapshot, func() error { return c.Snapshot(ctx, io.Discard) }},
		// A running container is refused either way; the class tells
		// whether the backend could move it at all.
		{"export", caps.RootDisk, func() error { return c.Export(ctx, t.TempDir()+"/x") }},
	}
	for _, ch := range checks {
		err := ch.op()
		if ch.has {
			require.Falsef(t, isNotImplemented(err), "%s is a capability of the backend: %v", ch.name, err)
		} else {
			require.Truef(t, isNotImplemented(err), "%s lacks a not-implemented error: %v", ch.name, err)
		}
	}
}
