package docker

import (
	"context"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime/driver"
)

func openFake(t *testing.T, f *fakeEngine, opts ...Option) *Runtime {
	t.Helper()
	r, err := Open(append([]Option{withEngine(f), WithStateDir(t.TempDir()), WithDaemonImages()}, opts...)...)
	require.NoError(t, err)
	return r
}

func createReq(id string, args ...string) *driver.CreateRequest {
	return &driver.CreateRequest{ID: id, Spec: defaultSpec(args...), Image: "busybox"}
}

func TestCapabilitiesFollowTheDaemon(t *testing.T) {
	f := newFake()
	caps := openFake(t, f).Capabilities()
	// HotAttach needs the daemon on this host: the fake is not.
	assert.Equal(t, driver.Capabilities{Exec: true, Pause: true, Update: true, Stats: true, Logs: true, CgroupNamespace: true, RawBlock: true, Snapshot: true, Events: true, Terminal: true, Attach: true}, caps)

	f.info.SecurityOptions = []string{"name=seccomp,profile=default", "name=userns"}
	f.info.DockerRootDir = "/var/lib/docker/100000.100000"
	f.info.LoggingDriver = "none"
	r := openFake(t, f)
	caps = r.Capabilities()
	assert.True(t, caps.UserNamespace)
	assert.True(t, caps.UserNamespaceShared, "one mapping for every container")
	assert.False(t, caps.Logs, "log driver none keeps nothing")
	require.NotNil(t, r.remap)
	assert.Equal(t, uint32(100000), r.remap.UID[0].HostID)

	f.info.OSType = "windows"
	_, err := Open(withEngine(f))
	assert.True(t, errdefs.IsNotImplemented(err), "%v", err)
}

// Containers berth did not make, or made in another scope, are neither
// listed nor touched, even when their name or ID prefix matches.
func TestForeignContainersUntouched(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	f.add("aaaa1111", "web", nil, container.StateRunning)
	f.add("bbbb2222", "other-scope", map[string]string{LabelMarker: "1", LabelID: "other-scope", LabelScope: "elsewhere"}, container.StateExited)
	f.add("cafe0000", "someone", nil, container.StateExited)
	r := openFake(t, f)

	list, err := r.List(ctx)
	require.NoError(t, err)
	assert.Empty(t, list)
	for _, id := range []string{"web", "other-scope", "cafe"} {
		_, err := r.State(ctx, id)
		assert.True(t, errdefs.IsNotFound(err), "%s: %v", id, err)
		assert.True(t, errdefs.IsNotFound(r.Kill(ctx, id, syscall.SIGKILL)), id)
		assert.True(t, errdefs.IsNotFound(r.Delete(ctx, id)), id)
	}
	assert.Len(t, f.containers, 3, "nothing removed")
	for _, c := range f.calls {
		assert.False(t, strings.HasPrefix(c, "kill") || strings.HasPrefix(c, "remove"), "touched: %s", c)
	}
	err = r.Create(ctx, createReq("web", "/bin/true"))
	assert.True(t, errdefs.IsAlreadyExists(err), "the name is taken: %v", err)
	err = r.Create(ctx, createReq("x", "/bin/true"))
	assert.True(t, errdefs.IsInvalidArgument(err), "Docker names have two characters at least: %v", err)
}

func TestLifecycleOnFake(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	r := openFake(t, f, WithScope("s1"))
	req := createReq("box", "/bin/sleep", "1")
	req.Labels = map[string]string{"team": "a"}
	require.NoError(t, r.Create(ctx, req))

	info, err := r.State(ctx, "box")
	require.NoError(t, err)
	assert.Equal(t, driver.StatusCreated, info.Status)
	assert.Equal(t, map[string]string{"team": "a"}, info.Labels, "the caller's labels, not berth's")
	assert.Equal(t, []string{"/bin/sleep", "1"}, info.Spec.Process.Args)
	c := f.containers[r.ids["box"]]
	assert.Equal(t, "a", c.config.Labels["team"], "the caller's labels are Docker labels too")
	assert.Equal(t, "s1", c.config.Labels[LabelScope])
	assert.Equal(t, container.RestartPolicyDisabled, c.host.RestartPolicy.Name)
	assert.False(t, c.config.OpenStdin, "no stdin without a reader")

	assert.True(t, errdefs.IsFailedPrecondition(r.Kill(ctx, "box", syscall.SIGTERM)), "Docker cannot signal a created container")
	require.NoError(t, r.Start(ctx, "box"))
	assert.True(t, errdefs.IsFailedPrecondition(r.Delete(ctx, "box")), "removing a running container is a conflict")
	require.NoError(t, r.Pause(ctx, "box"))
	assert.True(t, errdefs.IsFailedPrecondition(r.Pause(ctx, "box")))
	assert.True(t, errdefs.IsFailedPrecondition(r.Kill(ctx, "box", syscall.SIGTERM)), "Docker would resume it to deliver TERM")
	assert.Equal(t, container.StatePaused, f.containers[r.ids["box"]].state)
	require.NoError(t, r.Resume(ctx, "box"))

	done := make(chan driver.ExitStatus, 1)
	go func() {
		st, err := r.Wait(ctx, "box")
		assert.NoError(t, err)
		done <- st
	}()
	time.Sleep(50 * time.Millisecond)
	require.NoError(t, r.Kill(ctx, "box", syscall.SIGKILL))
	st := <-done
	assert.Equal(t, 137, st.Code)
	assert.Equal(t, syscall.SIGKILL, st.Signal)

	list, err := r.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, driver.StatusStopped, list[0].Status)
	require.NotNil(t, list[0].Exit)
	assert.Equal(t, 137, list[0].Exit.Code)
	require.NoError(t, r.Delete(ctx, "box"))
	assert.Empty(t, f.containers)
	_, err = r.State(ctx, "box")
	assert.True(t, errdefs.IsNotFound(err))
}

// A Wait in flight when the daemon restarts goes on once it answers again.
func TestWaitAcrossBrokenConnection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := newFake()
	r := openFake(t, f)
	require.NoError(t, r.Create(ctx, createReq("box", "/bin/true")))
	require.NoError(t, r.Start(ctx, "box"))
	f.mu.Lock()
	f.waitBreaks = 2
	f.mu.Unlock()
	done := make(chan driver.ExitStatus, 1)
	go func() {
		st, err := r.Wait(ctx, "box")
		assert.NoError(t, err)
		done <- st
	}()
	time.Sleep(300 * time.Millisecond)
	f.exit(r.ids["box"], 3)
	select {
	case st := <-done:
		assert.Equal(t, 3, st.Code)
		assert.Zero(t, st.Signal)
	case <-ctx.Done():
		t.Fatal("Wait did not survive the broken connection")
	}
	assert.Zero(t, f.waitBreaks, "both broken waits were retried")
}

// An exit that came before Wait registered shows in the state.
func TestWaitAfterExit(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	r := openFake(t, f)
	require.NoError(t, r.Create(ctx, createReq("box", "/bin/true")))
	require.NoError(t, r.Start(ctx, "box"))
	f.exit(r.ids["box"], 7)
	st, err := r.Wait(ctx, "box")
	require.NoError(t, err)
	assert.Equal(t, 7, st.Code)
	assert.False(t, st.ExitedAt.IsZero())
}

// Output given writers is copied until the stream ends, before Wait
// returns; Logs reads the kept output back, demultiplexed.
func TestAttachAndLogs(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	r := openFake(t, f)
	var out, errOut fixture.SyncBuffer
	req := createReq("box", "/bin/sh", "-c", "...")
	req.IO = driver.IO{Stdout: &out, Stderr: &errOut}
	require.NoError(t, r.Create(ctx, req))
	id := r.ids["box"]
	assert.True(t, f.containers[id].config.AttachStdout)
	f.containers[id].output = multiplexed("to-out\n", "to-err\n")
	require.NoError(t, r.Start(ctx, "box"))
	f.exit(id, 0)
	_, err := r.Wait(ctx, "box")
	require.NoError(t, err)
	assert.Equal(t, "to-out\n", out.String())
	assert.Equal(t, "to-err\n", errOut.String())

	rc, err := r.Logs(ctx, "box")
	require.NoError(t, err)
	b, err := io.ReadAll(rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	assert.Equal(t, "to-out\nto-err\n", string(b))

	require.NoError(t, r.Delete(ctx, "box"))
	assert.Empty(t, r.streams, "Delete drops the streams")
}

// Docker drops what the host cannot apply with a warning; berth refuses the
// container instead and removes it.
func TestCreateWarningRefused(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	r := openFake(t, f)
	f.warnings = []string{"Your kernel does not support swap limit capabilities"}
	err := r.Create(ctx, createReq("box", "/bin/true"))
	assert.True(t, errdefs.IsNotImplemented(err), "%v", err)
	assert.Contains(t, err.Error(), "swap limit")
	assert.Empty(t, f.containers, "the half-made container is removed")
	_, err = r.State(ctx, "box")
	assert.True(t, errdefs.IsNotFound(err))
}

// A cached Docker ID that went stale (the container was removed and made
// again under the same name) is looked up again.
func TestStaleCachedID(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	r := openFake(t, f)
	other := openFake(t, f)
	require.NoError(t, r.Create(ctx, createReq("box", "/bin/true")))
	first := r.ids["box"]
	require.NoError(t, other.Delete(ctx, "box"))
	require.NoError(t, other.Create(ctx, createReq("box", "/bin/true")))
	require.NoError(t, r.Start(ctx, "box"))
	assert.NotEqual(t, first, r.ids["box"])
	assert.Equal(t, container.StateRunning, f.containers[r.ids["box"]].state)
}

func TestUpdateAndStats(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	r := openFake(t, f)
	require.NoError(t, r.Create(ctx, createReq("box", "/bin/sleep", "100")))
	require.NoError(t, r.Start(ctx, "box"))

	unlimited := int64(-1)
	err := r.Update(ctx, "box", &driver.Resources{MemoryLimit: &unlimited})
	assert.True(t, errdefs.IsNotImplemented(err), "Docker cannot lift a memory limit: %v", err)

	s, err := r.Stats(ctx, "box")
	require.NoError(t, err)
	assert.Zero(t, s.MemoryLimit, "Docker's host-memory figure means no limit")
	assert.Zero(t, s.PidsLimit, "max means no limit")
	assert.Equal(t, uint64(1), s.Pids)
	assert.Equal(t, uint64(12345), s.CPUUsageNanos)

	mem, pids := int64(96<<20), int64(50)
	require.NoError(t, r.Update(ctx, "box", &driver.Resources{MemoryLimit: &mem, PidsLimit: &pids}))
	h := f.containers[r.ids["box"]].host
	assert.Equal(t, mem, h.Memory)
	assert.Equal(t, int64(-1), h.MemorySwap, "the swap limit goes with the memory limit")
	assert.Equal(t, &pids, h.PidsLimit)
	s, err = r.Stats(ctx, "box")
	require.NoError(t, err)
	assert.Equal(t, uint64(mem), s.MemoryLimit)

	f.warnings = []string{"Your kernel does not support CPU cfs quota"}
	quota := int64(50000)
	err = r.Update(ctx, "box", &driver.Resources{CPUQuota: &quota})
	assert.True(t, errdefs.IsNotImplemented(err), "%v", err)
}

func TestErrorClasses(t *testing.T) {
	for _, tc := range []struct {
		err error
		is  func(error) bool
	}{
		{errdefs.ErrConflict.WithMessage("is not running"), errdefs.IsFailedPrecondition},
		{errdefs.ErrNotFound, errdefs.IsNotFound},
		{errdefs.ErrInvalidArgument, errdefs.IsInvalidArgument},
		{io.ErrUnexpectedEOF, errdefs.IsUnavailable},
		{syscall.ECONNREFUSED, errdefs.IsUnavailable},
		{context.Canceled, func(err error) bool { return err == context.Canceled }},
		{io.ErrShortWrite, errdefs.IsUnknown},
	} {
		assert.True(t, tc.is(classify(tc.err)), "%v -> %v", tc.err, classify(tc.err))
	}
}

func TestExitStatus(t *testing.T) {
	assert.Equal(t, driver.ExitStatus{Code: 0}, exitStatus(0, time.Time{}))
	assert.Equal(t, driver.ExitStatus{Code: 128}, exitStatus(128, time.Time{}))
	assert.Equal(t, driver.ExitStatus{Code: 143, Signal: syscall.SIGTERM}, exitStatus(143, time.Time{}))
	assert.Equal(t, driver.ExitStatus{Code: 255}, exitStatus(255, time.Time{}))
}

// The log is capped on the daemon's disk drivers, through their options;
// other drivers keep the daemon's configuration.
func TestLogCaps(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	r := openFake(t, f)
	req := createReq("capped", "/bin/true")
	req.Log = driver.LogLimits{MaxSize: 65536, MaxFiles: 3}
	require.NoError(t, r.Create(ctx, req))
	for _, c := range f.containers {
		assert.Equal(t, container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "65536", "max-file": "3"}}, c.host.LogConfig)
	}
	assert.Equal(t, container.LogConfig{Type: "local", Config: map[string]string{"max-size": "10485760", "max-file": "2"}}, logConfig("local", driver.LogLimits{}))
	assert.Equal(t, container.LogConfig{}, logConfig("journald", driver.LogLimits{MaxSize: 1 << 20, MaxFiles: 2}))
}

// Without an image store, Config.Image names the daemon's own images only
// by the explicit policy WithDaemonImages.
func TestDaemonImagesByPolicyOnly(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	r, err := Open(withEngine(f), WithStateDir(t.TempDir()))
	require.NoError(t, err)
	err = r.Create(ctx, createReq("web", "/bin/true"))
	require.True(t, errdefs.IsFailedPrecondition(err), "%v", err)
	require.Contains(t, err.Error(), "no image store")
	require.Empty(t, f.containers, "nothing created")
	require.NoError(t, openFake(t, f).Create(ctx, createReq("web", "/bin/true")))
}

// Start gives a terminal its first size (Docker 20.10 ignores the one sent
// at create), from the cache of the creating runtime or from the record
// for another; a container without a terminal, or without a size, gets no
// resize. A created container's terminal cannot be resized.
func TestStartSizesTerminalOnFake(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	r := openFake(t, f)
	req := createReq("tty", "/bin/sh")
	req.Spec.Process.Terminal = true
	req.Spec.Process.ConsoleSize = &specs.Box{Height: 24, Width: 80}
	require.NoError(t, r.Create(ctx, req))
	c := f.containers[r.ids["tty"]]
	assert.True(t, c.config.Tty)
	assert.Equal(t, [2]uint{24, 80}, c.host.ConsoleSize)
	err := r.ResizeTerminal(ctx, "tty", specs.Box{Height: 1, Width: 1})
	assert.True(t, errdefs.IsFailedPrecondition(err), "created: %v", err)
	require.NoError(t, r.Start(ctx, "tty"))
	assert.Contains(t, f.calls, "resize tty 24x80")

	other := openFake(t, f)
	f.exit(c.id, 0)
	f.mu.Lock()
	c.state = container.StateCreated
	f.calls = nil
	f.mu.Unlock()
	require.NoError(t, other.Start(ctx, "tty"))
	assert.Contains(t, f.calls, "resize tty 24x80", "from the record")
	require.NoError(t, other.ResizeTerminal(ctx, "tty", specs.Box{Height: 50, Width: 132}))
	assert.Contains(t, f.calls, "resize tty 50x132")

	for name, edit := range map[string]func(*driver.CreateRequest){
		"plain":   func(*driver.CreateRequest) {},
		"no-size": func(r *driver.CreateRequest) { r.Spec.Process.Terminal = true },
	} {
		req := createReq(name, "/bin/sh")
		edit(req)
		require.NoError(t, r.Create(ctx, req))
		require.NoError(t, r.Start(ctx, name))
		for _, call := range f.calls {
			assert.False(t, strings.HasPrefix(call, "resize "+name), "%s: %s", name, call)
		}
	}
	err = r.ResizeTerminal(ctx, "plain", specs.Box{Height: 1, Width: 1})
	assert.True(t, errdefs.IsFailedPrecondition(err), "no terminal: %v", err)

	req = createReq("bad", "/bin/sh")
	req.OpenStdin, req.IO.Stdin = true, strings.NewReader("")
	assert.True(t, errdefs.IsInvalidArgument(r.Create(ctx, req)))
	req = createReq("bad", "/bin/sh")
	req.StdinOnce = true
	assert.True(t, errdefs.IsInvalidArgument(r.Create(ctx, req)))
	assert.Len(t, f.containers, 3, "nothing created")
}
