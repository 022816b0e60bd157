package libcontainer_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/runtimetest"
)

// exitOnUSR1 is a container that exits 5 on SIGUSR1.
func exitOnUSR1(rootfs string) *runtime.Config {
	return &runtime.Config{Spec: runtime.DefaultSpec(rootfs, "/bin/sh", "-c", "trap 'exit 5' USR1; sleep 1000 & wait")}
}

// stepChild (BERTH_TEST_CHILD=step): creates a container on
// BERTH_TEST_ROOT, then starts it, then waits for it, saying "created",
// "started" and "waiting" as it goes, and stops at BERTH_TEST_STEP until
// killed.
func stepChild() int {
	root, rootfs, id, step := os.Getenv("BERTH_TEST_ROOT"), os.Getenv("BERTH_TEST_ROOTFS"), os.Getenv("BERTH_TEST_ID"), os.Getenv("BERTH_TEST_STEP")
	ctx := context.Background()
	engine, err := libcontainer.Open(root)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	rt, err := runtime.New(engine, runtime.WithStateDir(root))
	if err != nil {
		fmt.Println(err)
		return 1
	}
	c, err := rt.Create(ctx, id, exitOnUSR1(rootfs))
	if err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("created")
	if step == "created" {
		select {}
	}
	if err := c.Start(ctx); err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("started")
	if step == "started" {
		select {}
	}
	fmt.Println("waiting")
	_, _ = c.Wait(ctx)
	select {}
}

// supervisorPids lists the supervisors of root.
func supervisorPids(t *testing.T, root string) []int {
	t.Helper()
	var pids []int
	procs, err := os.ReadDir("/proc")
	require.NoError(t, err)
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 2 && args[1] == "berth-supervisor" && args[2] == root {
			pids = append(pids, pid)
		}
	}
	return pids
}

// requireNothingLeft checks that the containers ids have left nothing on
// the host: no state, no cgroup in any hierarchy, no supervisor of root
// once it had time to quit.
func requireNothingLeft(t *testing.T, root string, ids ...string) {
	t.Helper()
	for _, id := range ids {
		require.NoDirExists(t, filepath.Join(root, "containers", id))
		require.NoDirExists(t, filepath.Join(root, "runc", id))
		hs, err := os.ReadDir("/sys/fs/cgroup")
		require.NoError(t, err)
		for _, h := range hs {
			require.NoDirExists(t, filepath.Join("/sys/fs/cgroup", h.Name(), "berth", id))
		}
	}
	require.Eventually(t, func() bool { return len(supervisorPids(t, root)) == 0 }, 10*time.Second, 100*time.Millisecond, "the supervisor quits once idle")
}

// A caller killed (kill -9) after each step of a container's life loses
// nothing: another program starts the container, signals it, waits for it
// with its exit code, and deletes it, leaving nothing.
func TestCallerKilledAtEachStep(t *testing.T) {
	fixture.RequireRoot(t)
	rootfs := fixture.BusyboxTB(t)
	for _, step := range []string{"created", "started", "waiting"} {
		t.Run(step, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			root, id := filepath.Join(fixture.TempDir(t), "state"), runtimetest.NewID("kill9")
			cmd := exec.Command("/proc/self/exe", "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"=step", "BERTH_TEST_ROOT="+root, "BERTH_TEST_ROOTFS="+rootfs, "BERTH_TEST_ID="+id, "BERTH_TEST_STEP="+step)
			out, err := cmd.StdoutPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			sc := bufio.NewScanner(out)
			for sc.Scan() && sc.Text() != step {
			}
			require.NoError(t, sc.Err())
			if step == "waiting" {
				time.Sleep(200 * time.Millisecond) // into Wait
			}
			require.NoError(t, cmd.Process.Kill())
			_ = cmd.Wait()

			rt := openRoot(t, root)
			c, err := rt.Get(ctx, id)
			require.NoError(t, err)
			st, err := c.State(ctx)
			require.NoError(t, err)
			if step == "created" {
				require.Equal(t, runtime.StatusCreated, st)
				require.NoError(t, c.Start(ctx))
			} else {
				require.Equal(t, runtime.StatusRunning, st)
			}
			requireExit5(ctx, t, c, "the exit code outlives the killed caller")
			require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
			requireNothingLeft(t, root, id)
		})
	}
}

// A supervisor killed (kill -9) leaves its containers running, listed and
// controllable; waiting for one follows its init to its end, with its exit
// code unknown (-1); the next create starts a new supervisor, which keeps
// that container's exit code again; all is deleted with nothing left.
func TestSupervisorKilled(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rootfs := fixture.BusyboxTB(t)
	root := filepath.Join(fixture.TempDir(t), "state")
	rt := openRoot(t, root)
	var orphans []*runtime.Container
	for range 2 {
		c, err := rt.Create(ctx, runtimetest.NewID("orphan"), exitOnUSR1(rootfs))
		require.NoError(t, err)
		require.NoError(t, c.Start(ctx))
		orphans = append(orphans, c)
	}
	pids := supervisorPids(t, root)
	require.Len(t, pids, 1, "one supervisor keeps both containers")
	require.NoError(t, syscall.Kill(pids[0], syscall.SIGKILL))
	require.Eventually(t, func() bool { return len(supervisorPids(t, root)) == 0 }, 10*time.Second, 20*time.Millisecond)

	list, err := rt.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 2)
	for _, info := range list {
		require.Equal(t, runtime.StatusRunning, info.Status, "a container outlives its supervisor")
	}
	waited := make(chan runtime.ExitStatus, 1)
	go func() {
		es, err := orphans[0].Wait(ctx)
		if err != nil {
			es = runtime.ExitStatus{Code: -2} // told below
			t.Errorf("Wait: %v", err)
		}
		waited <- es
	}()
	select {
	case es := <-waited:
		t.Fatalf("Wait returned %+v while the container runs", es)
	case <-time.After(300 * time.Millisecond):
	}
	require.NoError(t, orphans[0].Kill(ctx, syscall.SIGKILL))
	require.Equal(t, -1, (<-waited).Code, "nobody recorded the exit")

	c, err := rt.Create(ctx, runtimetest.NewID("after"), exitOnUSR1(rootfs))
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx))
	require.Len(t, supervisorPids(t, root), 1, "a new supervisor")
	requireExit5(ctx, t, c)

	ids := []string{c.ID()}
	for _, o := range append(orphans, c) {
		require.NoError(t, o.Delete(ctx, runtime.DeleteOptions{Force: true}))
		ids = append(ids, o.ID())
	}
	requireNothingLeft(t, root, ids...)
}

// Containers over one supervisor's share go to the next one; each Wait is
// answered by the supervisor that keeps the container.
func TestSupervisorsShareContainers(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rootfs := fixture.BusyboxTB(t)
	root := filepath.Join(fixture.TempDir(t), "state")
	rt := openRoot(t, root, libcontainer.WithSupervisorShare(2))
	var cs []*runtime.Container
	for range 5 {
		c, err := rt.Create(ctx, runtimetest.NewID("share"), exitOnUSR1(rootfs))
		require.NoError(t, err)
		require.NoError(t, c.Start(ctx))
		cs = append(cs, c)
	}
	require.Len(t, supervisorPids(t, root), 3, "2 + 2 + 1")
	var ids []string
	for _, c := range cs {
		requireExit5(ctx, t, c)
		require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
		ids = append(ids, c.ID())
	}
	requireNothingLeft(t, root, ids...)
}

// openRoot opens the runtime on root with the engine's options, closed
// when the test ends.
func openRoot(t *testing.T, root string, opts ...libcontainer.Option) *runtime.Runtime {
	t.Helper()
	engine, err := libcontainer.Open(root, opts...)
	require.NoError(t, err)
	rt, err := runtime.New(engine, runtime.WithStateDir(root))
	require.NoError(t, err)
	t.Cleanup(func() { rt.Close() })
	return rt
}

// requireExit5 signals c (exitOnUSR1) until it stops, and checks that Wait
// gives its exit code, 5. (The first signal may come before the shell set
// its trap.)
func requireExit5(ctx context.Context, t *testing.T, c *runtime.Container, msg ...any) {
	t.Helper()
	require.Eventually(t, func() bool {
		_ = c.Kill(ctx, syscall.SIGUSR1)
		info, err := c.Info(ctx)
		return err == nil && info.Status == runtime.StatusStopped
	}, 10*time.Second, 100*time.Millisecond)
	es, err := c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 5, es.Code, msg...)
}

// A container whose libcontainer state is gone (its create was killed
// after the init's cgroups were made, before the state was written) is
// deleted with its cgroups, in every hierarchy.
func TestDeleteWithoutEngineStateRemovesCgroups(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rootfs := fixture.BusyboxTB(t)
	root := filepath.Join(fixture.TempDir(t), "state")
	rt := openRoot(t, root, libcontainer.Attached())
	c, err := rt.Create(ctx, runtimetest.NewID("nostate"), exitOnUSR1(rootfs))
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx))
	requireExit5(ctx, t, c)
	require.DirExists(t, filepath.Join("/sys/fs/cgroup/memory/berth", c.ID()), "the cgroups stay until the delete")
	require.NoError(t, os.Remove(filepath.Join(root, "runc", c.ID(), "state.json")))
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{Force: true}))
	requireNothingLeft(t, root, c.ID())
}

// Whoever reaches a supervisor's socket (root) gets an error for a
// request it must not take: more descriptors than a start's three,
// another protocol, an ID that is not one path element; the supervisor
// keeps serving its containers.
func TestSupervisorRefusesBadRequests(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rootfs := fixture.BusyboxTB(t)
	root := filepath.Join(fixture.TempDir(t), "state")
	rt := openRoot(t, root)
	c, err := rt.Create(ctx, runtimetest.NewID("bad"), exitOnUSR1(rootfs))
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx))
	null, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer null.Close()
	fd := int(null.Fd())
	for _, tc := range []struct {
		req   string
		fds   []int
		class string
	}{
		{`{"proto":1,"op":"start","id":"x"}`, []int{fd, fd, fd, fd}, "invalid-argument"},
		{`{"proto":99,"op":"wait","id":"` + c.ID() + `"}`, nil, "failed-precondition"},
		{`{"proto":1,"op":"wait","id":"../` + c.ID() + `"}`, nil, "invalid-argument"},
		{`{"proto":1,"op":"start","id":"a/b"}`, []int{fd, fd, fd}, "invalid-argument"},
	} {
		conn, err := net.Dial("unix", filepath.Join(root, "supervisor", "0", "sock"))
		require.NoError(t, err)
		var oob []byte
		if tc.fds != nil {
			oob = unix.UnixRights(tc.fds...)
		}
		_, _, err = conn.(*net.UnixConn).WriteMsgUnix([]byte(tc.req+"\n"), oob, nil)
		require.NoError(t, err)
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
		line, err := bufio.NewReader(conn).ReadBytes('\n')
		require.NoError(t, err, tc.req)
		var st struct{ Error, Class string }
		require.NoError(t, json.Unmarshal(line, &st))
		require.Equal(t, tc.class, st.Class, "%s: %s", tc.req, st.Error)
		conn.Close()
	}

	// A flood: descriptors sent a few at a time, the line never ended,
	// are not piled up until the request's size or time is up.
	pids := supervisorPids(t, root)
	require.Len(t, pids, 1)
	fdsOf := func() int {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pids[0]))
		require.NoError(t, err)
		return len(ents)
	}
	before := fdsOf()
	conn, err := net.Dial("unix", filepath.Join(root, "supervisor", "0", "sock"))
	require.NoError(t, err)
	for range 200 {
		if _, _, err := conn.(*net.UnixConn).WriteMsgUnix([]byte(" "), unix.UnixRights(fd, fd, fd, fd), nil); err != nil {
			break // refused and closed
		}
	}
	require.Less(t, fdsOf(), before+16, "the supervisor holds the flood's descriptors")
	conn.Close()

	requireExit5(ctx, t, c, "the supervisor still keeps its container")
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	requireNothingLeft(t, root, c.ID())
}
