package libcontainer_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/runtimetest"
)

// tickScript writes a numbered line on each stream every 50 ms.
const tickScript = `i=0; while true; do echo tick-$i; echo etick-$i >&2; i=$((i+1)); sleep 0.05; done`

// ticks counts the records of each stream in the CRI log at path, checking
// they are the script's lines in order.
func ticks(t *testing.T, path string) (out, errs int) {
	t.Helper()
	for _, r := range runtimetest.ReadCRILog(t, path) {
		require.Equal(t, "F", r.Tag)
		switch r.Stream {
		case "stdout":
			require.Equal(t, fmt.Sprintf("tick-%d", out), r.Content)
			out++
		case "stderr":
			require.Equal(t, fmt.Sprintf("etick-%d", errs), r.Content)
			errs++
		}
	}
	return out, errs
}

// waitTicks waits until the CRI log at path has more than n ticks on each
// stream.
func waitTicks(ctx context.Context, t *testing.T, path string, n int) {
	t.Helper()
	for {
		if _, err := os.Stat(path); err == nil {
			if out, errs := ticks(t, path); out > n && errs > n {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %d ticks in %s: %v", n, path, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func openRuntime(t *testing.T, root string) *runtime.Runtime {
	engine, err := libcontainer.Open(root)
	require.NoError(t, err)
	rt, err := runtime.New(engine, runtime.WithStateDir(root))
	require.NoError(t, err)
	return rt
}

// The monitor writes the CRI log: killing the program that created the
// container (kill -9, as a CRI server's crash) stops nothing, and a later
// program has the monitor reopen the log after a rotation.
func TestCRILogSurvivesCaller(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := fixture.TempDir(t)
	root, rootfs, id := filepath.Join(dir, "state"), fixture.BusyboxTB(t), runtimetest.NewID("crilog-survivor")
	path := filepath.Join(t.TempDir(), "0.log")
	child := startChild(t, "monitor", root, rootfs, id, "BERTH_TEST_CRILOG="+path)
	require.NoError(t, child.Process.Signal(syscall.SIGKILL))
	_ = child.Wait()
	out, errs := ticks(t, path)
	waitTicks(ctx, t, path, max(out, errs)+5)

	rt := openRuntime(t, root)
	c, err := rt.Get(ctx, id)
	require.NoError(t, err)
	rotated := path + ".1"
	require.NoError(t, os.Rename(path, rotated))
	require.NoError(t, c.ReopenLog(ctx))
	_, err = os.Stat(path)
	require.NoError(t, err, "the new file exists once ReopenLog returns")
	oldOut, oldErrs := ticks(t, rotated)
	// The new file goes on where the old one stopped.
	for {
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		if recs := runtimetest.ParseCRILog(t, b); len(recs) >= 10 {
			for _, r := range recs {
				var n int
				if r.Stream == "stdout" {
					_, err = fmt.Sscanf(r.Content, "tick-%d", &n)
					require.GreaterOrEqual(t, n, oldOut)
				} else {
					_, err = fmt.Sscanf(r.Content, "etick-%d", &n)
					require.GreaterOrEqual(t, n, oldErrs)
				}
				require.NoError(t, err)
			}
			break
		}
		require.NoError(t, ctx.Err())
		time.Sleep(20 * time.Millisecond)
	}
	o, e := ticks(t, rotated)
	require.Equal(t, [2]int{oldOut, oldErrs}, [2]int{o, e}, "the rotated file grows no more")

	require.NoError(t, c.Kill(ctx, syscall.SIGKILL))
	_, err = c.Wait(ctx)
	require.NoError(t, err)
	err = c.ReopenLog(ctx)
	require.Truef(t, errdefs.IsFailedPrecondition(err), "%v", err)
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
}

// With Attached, the owner writes the CRI log: once it is killed nobody
// copies the container's output, and ReopenLog says so.
func TestCRILogAttachedOwnerKilled(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := fixture.TempDir(t)
	root, rootfs, id := filepath.Join(dir, "state"), fixture.BusyboxTB(t), runtimetest.NewID("crilog-owned")
	path := filepath.Join(t.TempDir(), "0.log")
	child := startChild(t, "attached", root, rootfs, id, "BERTH_TEST_CRILOG="+path)
	waitTicks(ctx, t, path, 2)
	rt := openRuntime(t, root)
	c, err := rt.Get(ctx, id)
	require.NoError(t, err)
	require.NoError(t, c.ReopenLog(ctx), "the owner serves reopens while it lives")

	require.NoError(t, child.Process.Signal(syscall.SIGKILL))
	_ = child.Wait()
	st, err := c.State(ctx)
	require.NoError(t, err)
	if st == runtime.StatusRunning {
		err = c.ReopenLog(ctx)
		require.Truef(t, errdefs.IsFailedPrecondition(err), "%v", err)
		require.Contains(t, err.Error(), "no process copies")
	}
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{Force: true}))
}

// A CRI log on a full filesystem holds up nothing: the container writes
// on, its kept log gets everything, the monitor reports the failure once
// in its log, and records resume on a line of their own once there is
// room again.
func TestCRILogDiskFull(t *testing.T) {
	fixture.RequireRoot(t)
	for _, attached := range []bool{false, true} {
		t.Run(map[bool]string{false: "monitor", true: "attached"}[attached], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			logDir := t.TempDir()
			require.NoError(t, unix.Mount("tmpfs", logDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=256k"))
			t.Cleanup(func() { _ = unix.Unmount(logDir, unix.MNT_DETACH) })
			path := filepath.Join(logDir, "0.log")
			var opts []libcontainer.Option
			if attached {
				opts = append(opts, libcontainer.Attached())
			}
			root := filepath.Join(fixture.TempDir(t), "state")
			engine, err := libcontainer.Open(root, opts...)
			require.NoError(t, err)
			rt, err := runtime.New(engine, runtime.WithStateDir(root))
			require.NoError(t, err)
			// 1 MB of lines, four times the filesystem; then, once told,
			// one more line.
			script := `i=0; while [ $i -lt 10000 ]; do echo "line-$i-padding-padding-padding-padding-padding-padding-padding-padding-padding"; i=$((i+1)); done; echo filled >&2
trap 'echo after; exit 0' USR1; sleep 1000 & wait`
			cfg := &runtime.Config{Spec: runtime.DefaultSpec(fixture.BusyboxTB(t), "/bin/sh", "-c", script), CRILog: path}
			c, err := rt.Create(ctx, runtimetest.NewID("crilog-full"), cfg)
			require.NoError(t, err)
			t.Cleanup(func() { _ = c.Delete(context.Background(), runtime.DeleteOptions{Force: true}) })
			require.NoError(t, c.Start(ctx))
			for {
				rc, err := c.Logs(ctx)
				require.NoError(t, err)
				b := make([]byte, 0, 2<<20)
				for {
					n, err := rc.Read(b[len(b):cap(b)])
					b = b[:len(b)+n]
					if err != nil {
						break
					}
				}
				rc.Close()
				if strings.Contains(string(b), "filled\n") {
					require.Contains(t, string(b), "line-9999-", "the kept log has it all")
					break
				}
				require.NoError(t, ctx.Err(), "the container is held up")
				time.Sleep(50 * time.Millisecond)
			}
			var st unix.Statfs_t
			require.NoError(t, unix.Statfs(logDir, &st))
			require.Less(t, st.Bavail*uint64(st.Bsize), uint64(8<<10), "the filesystem is full")

			// Room again: the next record is written, on a line of its own.
			require.NoError(t, os.Truncate(path, 0))
			require.NoError(t, c.Kill(ctx, syscall.SIGUSR1))
			es, err := c.Wait(ctx)
			require.NoError(t, err)
			require.Equal(t, 0, es.Code)
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			// What a cut record left (its end) precedes the new record.
			i := strings.LastIndex(string(b), "\n20")
			recs := runtimetest.ParseCRILog(t, b[i+1:])
			require.Len(t, recs, 1)
			require.Equal(t, "F:after", recs[0].Tag+":"+recs[0].Content)
			if !attached {
				mon, err := os.ReadFile(filepath.Join(root, "containers", c.ID(), "monitor.log"))
				require.NoError(t, err)
				require.Equal(t, 1, strings.Count(string(mon), "CRI log"), "reported once: %s", mon)
				require.Contains(t, string(mon), "no space left on device")
			}
		})
	}
}
