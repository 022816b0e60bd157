package libcontainer_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/runtimetest"
)

// childEnv makes the test binary act as a separate program that creates a
// container and then exits (or is killed), so tests can check what survives
// the calling process.
const childEnv = "BERTH_TEST_CHILD"

// runChild: BERTH_TEST_CHILD=monitor|attached, args from env: root, rootfs,
// id. It creates and starts a container running `sleep 1000` (trapping
// USR1 to exit 5), prints "started", then exits (monitor) or blocks until
// killed (attached). With BERTH_TEST_CRILOG set, the container runs
// tickScript with that CRI log, and the child blocks until killed in both
// modes.
func runChild(mode string) int {
	switch mode {
	case "mainthread":
		return mainThreadChild()
	case "pod":
		return podChild()
	case "step":
		return stepChild()
	}
	root, rootfs, id := os.Getenv("BERTH_TEST_ROOT"), os.Getenv("BERTH_TEST_ROOTFS"), os.Getenv("BERTH_TEST_ID")
	var opts []libcontainer.Option
	if mode == "attached" {
		opts = append(opts, libcontainer.Attached())
	}
	engine, err := libcontainer.Open(root, opts...)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	rt, err := runtime.New(engine, runtime.WithStateDir(root))
	if err != nil {
		fmt.Println(err)
		return 1
	}
	ctx := context.Background()
	cfg := &runtime.Config{Spec: runtime.DefaultSpec(rootfs, "/bin/sh", "-c", "trap 'exit 5' USR1; sleep 1000 & wait")}
	criLog := os.Getenv("BERTH_TEST_CRILOG")
	if criLog != "" {
		// Ticks on both streams until killed, into a CRI log.
		cfg = &runtime.Config{Spec: runtime.DefaultSpec(rootfs, "/bin/sh", "-c", tickScript), CRILog: criLog}
	}
	c, err := rt.Create(ctx, id, cfg)
	if err == nil {
		err = c.Start(ctx)
	}
	if err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("started")
	if mode == "attached" || criLog != "" {
		select {} // until killed
	}
	return 0
}

func startChild(t *testing.T, mode, root, rootfs, id string, env ...string) *exec.Cmd {
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(os.Environ(), childEnv+"="+mode, "BERTH_TEST_ROOT="+root, "BERTH_TEST_ROOTFS="+rootfs, "BERTH_TEST_ID="+id)
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	buf := make([]byte, 64)
	n, _ := out.Read(buf)
	require.Equal(t, "started\n", string(buf[:n]))
	return cmd
}

// A container created by a program that has exited is listed, controlled
// and waited for (with its exit code) by a later program on the same root.
func TestSurvivesCallerExit(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := fixture.TempDir(t)
	root, rootfs, id := filepath.Join(dir, "state"), fixture.BusyboxTB(t), runtimetest.NewID("survivor")
	child := startChild(t, "monitor", root, rootfs, id)
	require.NoError(t, child.Wait(), "the creating program exits")

	engine, err := libcontainer.Open(root)
	require.NoError(t, err)
	rt, err := runtime.New(engine, runtime.WithStateDir(root))
	require.NoError(t, err)
	list, err := rt.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, runtime.StatusRunning, list[0].Status)
	c, err := rt.Get(ctx, id)
	require.NoError(t, err)
	require.NoError(t, c.Kill(ctx, syscall.SIGUSR1))
	st, err := c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 5, st.Code, "the exit code survives its creator")
	info, err := c.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, 5, info.Exit.Code)
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	list, err = rt.List(ctx)
	require.NoError(t, err)
	require.Empty(t, list)
}

// An attached container outlives an owner killed with SIGKILL, as with
// `runc run`: the next program sees it running, kills, waits (exit code
// unknown) and deletes it.
func TestAttachedOrphan(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := fixture.TempDir(t)
	root, rootfs, id := filepath.Join(dir, "state"), fixture.BusyboxTB(t), runtimetest.NewID("owned")
	child := startChild(t, "attached", root, rootfs, id)

	engine, err := libcontainer.Open(root)
	require.NoError(t, err)
	rt, err := runtime.New(engine, runtime.WithStateDir(root))
	require.NoError(t, err)
	c, err := rt.Get(ctx, id)
	require.NoError(t, err)
	st, err := c.State(ctx)
	require.NoError(t, err)
	require.Equal(t, runtime.StatusRunning, st, "other programs see it while its owner lives")

	require.NoError(t, child.Process.Kill())
	_ = child.Wait()
	st, err = c.State(ctx)
	require.NoError(t, err)
	require.Equal(t, runtime.StatusRunning, st, "the orphan lives on")

	waited := make(chan runtime.ExitStatus, 1)
	go func() {
		es, err := c.Wait(ctx)
		require.NoError(t, err)
		waited <- es
	}()
	select {
	case es := <-waited:
		t.Fatalf("Wait returned %+v while the orphan runs", es)
	case <-time.After(300 * time.Millisecond):
	}
	require.NoError(t, c.Kill(ctx, syscall.SIGKILL))
	es := <-waited
	require.Equal(t, -1, es.Code, "nobody recorded the orphan's exit")
	st, err = c.State(ctx)
	require.NoError(t, err)
	require.Equal(t, runtime.StatusStopped, st)
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	_, err = rt.Get(ctx, id)
	require.Error(t, err)
}

// runc's specconv sets device owners in its shared defaults when it converts
// a user-namespaced spec; a container without a user namespace created
// afterwards in the same process must still get root-owned device nodes.
func TestDeviceOwnersAfterUserNamespace(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root, rootfs := filepath.Join(fixture.TempDir(t), "state"), fixture.BusyboxTB(t)
	engine, err := libcontainer.Open(root)
	require.NoError(t, err)
	rt, err := runtime.New(engine, runtime.WithStateDir(root))
	require.NoError(t, err)
	for _, userns := range []bool{true, false} {
		var out strings.Builder
		c, err := rt.Create(ctx, runtimetest.NewID("devowner"), &runtime.Config{
			Spec:          runtime.DefaultSpec(rootfs, "/bin/stat", "-c", "%u:%g", "/dev/null"),
			UserNamespace: userns,
			IO:            runtime.IO{Stdout: &out, Stderr: &out},
		})
		require.NoError(t, err)
		require.NoError(t, c.Start(ctx))
		_, err = c.Wait(ctx)
		require.NoError(t, err)
		require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
		if !userns {
			require.Equal(t, "0:0\n", out.String(), "device node owner without a user namespace")
		}
	}
}
