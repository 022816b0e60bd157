package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// logDiskUsage sums the container's log files under the state root.
func logDiskUsage(t *testing.T, id string) int64 {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(stateRoot, "containers", id, "container.log*"))
	require.NoError(t, err)
	require.NotEmpty(t, names)
	var n int64
	for _, name := range names {
		if fi, err := os.Stat(name); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// TestLogsOfRun: a container started with run, whose output went to
// berthctl's stdout and stderr, has its log kept as well.
// (Lines of the two streams keep their order in the log only when apart
// in time: each stream is copied on its own.)
func TestLogsOfRun(t *testing.T) {
	requireEngine(t)
	cleanup(t, "logsrun")
	r := berthctl(t, "run", "--name", "logsrun", "--rootfs", rootfs, "--", "/bin/sh", "-c", "echo one; echo two >&2; sleep 0.3; echo three")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "one\nthree\n", r.stdout)
	assert.Equal(t, "two\n", r.stderr)
	logs := ok(t, "logs", "logsrun")
	for _, l := range []string{"one\n", "two\n", "three\n"} {
		assert.Contains(t, logs, l)
	}
	assert.True(t, strings.HasSuffix(logs, "three\n"), logs)
	assert.Equal(t, "three\n", ok(t, "logs", "--tail", "1", "logsrun"))
	assert.Equal(t, "", ok(t, "logs", "--tail", "0", "logsrun"))
	assert.Equal(t, logs, ok(t, "logs", "--tail", "10", "logsrun"))
	assert.Equal(t, "three\n", ok(t, "logs", "-f", "--tail", "1", "logsrun"), "-f on a stopped container ends")
	requireFailure(t, berthctl(t, "logs", "--tail", "-1", "logsrun"), "invalid-argument")
	ok(t, "rm", "logsrun")
}

// TestLogsFollow: logs -f prints what the container writes as it writes
// it and ends when the container stops.
func TestLogsFollow(t *testing.T) {
	requireEngine(t)
	const id = "logsfollow"
	cleanup(t, id)
	ok(t, "create", "--name", id, "--rootfs", rootfs, "--", "/bin/sh", "-c",
		"sleep 1; echo early; for i in 1 2 3; do echo line$i; sleep 0.3; done; echo done >&2")
	// Followed from before the container writes (it sleeps first).
	cmd := exec.Command(bin, "--root", stateRoot, "logs", "-f", "--tail", "0", id)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ok(t, "start", id)
	time.Sleep(300 * time.Millisecond)
	ended := make(chan []byte)
	go func() {
		b := make([]byte, 0, 1024)
		buf := make([]byte, 1024)
		for {
			n, err := out.Read(buf)
			b = append(b, buf[:n]...)
			if err != nil {
				ended <- b
				return
			}
		}
	}()
	// A second follower with the whole log, started while it runs.
	r := make(chan result, 1)
	go func() { r <- berthctl(t, "logs", "-f", id) }()
	var got []byte
	select {
	case got = <-ended:
	case <-time.After(30 * time.Second):
		t.Fatal("logs -f did not end with the container")
	}
	require.NoError(t, cmd.Wait())
	assert.Equal(t, "early\nline1\nline2\nline3\ndone\n", string(got))
	whole := <-r
	require.Equal(t, 0, whole.code, whole.stderr)
	assert.Equal(t, "early\nline1\nline2\nline3\ndone\n", whole.stdout)
	assert.Equal(t, "0\n", ok(t, "wait", id))
	ok(t, "rm", id)
}

// TestLogsCapped: a container writing much more than its log's cap leaves
// at most cap*files on disk, and the newest output is what logs prints.
func TestLogsCapped(t *testing.T) {
	requireEngine(t)
	const id = "logscap"
	cleanup(t, id)
	r := berthctl(t, "run", "--name", id, "--log-max-size", "64k", "--log-max-files", "2", "--rootfs", rootfs, "--",
		"/bin/sh", "-c", "yes 0123456789abcdef | head -c 3000000; echo; echo the-end")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Len(t, r.stdout, 3000000+len("\nthe-end\n"), "run forwards all of it")
	logs := ok(t, "logs", id)
	assert.True(t, strings.HasSuffix(r.stdout, logs), "the log is the newest output")
	assert.True(t, strings.HasSuffix(logs, "\nthe-end\n"))
	assert.LessOrEqual(t, len(logs), 2*64<<10)
	assert.Greater(t, len(logs), 64<<10, "a full rotated file and the current one")
	assert.LessOrEqual(t, logDiskUsage(t, id), int64(2*64<<10))
	assert.Equal(t, "the-end\n", ok(t, "logs", "--tail", "1", id))
	ok(t, "rm", id)

	// A container writing as fast as it can, for as long as it runs, with
	// nobody reading: its log stays within its cap.
	const hostile = "logshostile"
	cleanup(t, hostile)
	ok(t, "create", "--name", hostile, "--log-max-size", "64k", "--log-max-files", "3", "--rootfs", rootfs, "--", "/bin/sh", "-c", "yes")
	ok(t, "start", hostile)
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		require.LessOrEqual(t, logDiskUsage(t, hostile), int64(3*64<<10))
		time.Sleep(100 * time.Millisecond)
	}
	ok(t, "rm", "-f", hostile)
}

// TestRunBrokenPipe: when what reads run's output goes away, the container
// sees the broken pipe as if it wrote there itself (yes dies of SIGPIPE),
// and berthctl lives on to remove it.
func TestRunBrokenPipe(t *testing.T) {
	requireEngine(t)
	cleanup(t, "brokenpipe")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c",
		`{ "$0" --root "$1" run --rm --name brokenpipe --rootfs "$2" -- /bin/sh -c 'yes; echo yes-ended >&2'; echo "berthctl $?" >&2; } | head -n 1`,
		bin, stateRoot, rootfs)
	cmd.WaitDelay = 5 * time.Second
	t.Cleanup(func() {
		if cmd.ProcessState == nil || !cmd.ProcessState.Exited() {
			_ = invoke(t, "", "--root", stateRoot, "rm", "-f", "brokenpipe")
		}
	})
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, stderr.String())
	assert.Equal(t, "y\n", string(out))
	assert.Contains(t, stderr.String(), "berthctl 0\n", "the shell in the container went on after yes died")
	assert.Contains(t, stderr.String(), "yes-ended\n")
	assert.NotContains(t, psIDs(t), "brokenpipe")
}
