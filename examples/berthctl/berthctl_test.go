package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/internal/errclass"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/volume"
)

// The suite drives a real berthctl binary, built once, against one state
// root and one busybox root filesystem shared by every test.
var (
	bin       string
	stateRoot string
	rootfs    string
	rootfsErr error
)

func TestMain(m *testing.M) {
	// The test binary never opens the backend itself (the subprocess does),
	// so it needs no libcontainer.Init.
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	work, err := os.MkdirTemp("", "berthctl-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// A user-namespaced container's root must traverse down to the rootfs.
	if err := os.Chmod(work, 0o711); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	bin = filepath.Join(work, "berthctl")
	stateRoot = filepath.Join(work, "state")
	rootfs = filepath.Join(work, "rootfs")
	build := exec.Command(goTool(), "build", "-tags", buildTags, "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build berthctl: %v\n%s", err, out)
		os.RemoveAll(work)
		return 1
	}
	rootfsErr = fixture.Busybox(rootfs)

	code := m.Run()

	if err := checkClean(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: state left behind:", err)
		code = 1
	}
	if mounted(work) {
		// Never walk into a leaked mount: leave it for inspection.
		fmt.Fprintln(os.Stderr, "FAIL: mounts remain under", work, "- left in place")
		return 1
	}
	os.RemoveAll(work)
	return code
}

// mounted reports whether anything is mounted under dir.
func mounted(dir string) bool {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	return err != nil || strings.Contains(string(mi), dir)
}

// checkClean asserts the suite left no container under the state root and
// no mount below it.
func checkClean() error {
	var errs []error
	if _, err := os.Stat(stateRoot); err == nil {
		out, err := exec.Command(bin, "--root", stateRoot, "ps", "-q").Output()
		if err != nil {
			errs = append(errs, fmt.Errorf("ps -q: %w", err))
		} else if ids := strings.Fields(string(out)); len(ids) > 0 {
			errs = append(errs, fmt.Errorf("containers left: %v", ids))
			_ = exec.Command(bin, append([]string{"--root", stateRoot, "rm", "-f"}, ids...)...).Run()
		}
	}
	if mounted(stateRoot) {
		errs = append(errs, fmt.Errorf("mounts left under %s", stateRoot))
	}
	return errors.Join(errs...)
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}

// requireEngine skips a test that runs containers when this is not root or
// busybox is missing, or fails it under CI=true, where the environment must
// provide everything.
func requireEngine(t *testing.T) {
	t.Helper()
	fixture.RequireRoot(t)
	fixture.Require(t, rootfsErr == nil, fmt.Sprintf("needs a busybox root filesystem: %v", rootfsErr))
}

type result struct {
	code           int
	stdout, stderr string
}

// berthctl runs the binary on the suite's state root.
func berthctl(t *testing.T, args ...string) result {
	t.Helper()
	return invoke(t, "", append([]string{"--root", stateRoot}, args...)...)
}

// invoke runs the binary with exactly args and stdin.
func invoke(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.WaitDelay = 10 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("berthctl %v: %v", args, err)
	}
	r := result{code: cmd.ProcessState.ExitCode(), stdout: out.String(), stderr: errb.String()}
	t.Logf("berthctl %s -> %d\nstdout: %q\nstderr: %q", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

// ok asserts that a command succeeded and returns its stdout.
func ok(t *testing.T, args ...string) string {
	t.Helper()
	r := berthctl(t, args...)
	require.Equal(t, 0, r.code, "berthctl %v: stderr %q", args, r.stderr)
	return r.stdout
}

// requireFailure asserts berthctl's own failure: exit 125 and exactly one
// line on stderr, "berthctl: <class>: <message>".
func requireFailure(t *testing.T, r result, class string) {
	t.Helper()
	require.Equal(t, exitFailure, r.code, "stderr %q", r.stderr)
	assert.Equal(t, 1, strings.Count(r.stderr, "\n"), "one line on stderr: %q", r.stderr)
	assert.True(t, strings.HasSuffix(r.stderr, "\n"), "stderr ends with a newline: %q", r.stderr)
	assert.Regexp(t, "^berthctl: "+regexp.QuoteMeta(class)+": .+\n$", r.stderr)
}

// cleanup force-removes a container at the end of the test, whatever
// happened to it.
func cleanup(t *testing.T, id string) {
	t.Cleanup(func() {
		r := invoke(t, "", "--root", stateRoot, "rm", "-f", id)
		if r.code != 0 && !strings.HasPrefix(r.stderr, "berthctl: not-found:") {
			t.Errorf("cleanup of %s: %q", id, r.stderr)
		}
	})
}

// psRows returns the ps table as ID -> [STATUS PID CREATED EXIT].
func psRows(t *testing.T) map[string][]string {
	t.Helper()
	out := ok(t, "ps")
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	require.Equal(t, []string{"ID", "STATUS", "PID", "CREATED", "EXIT"}, strings.Fields(lines[0]))
	rows := map[string][]string{}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		require.Len(t, f, 5, "ps row %q", l)
		rows[f[0]] = f[1:]
	}
	return rows
}

func psIDs(t *testing.T) []string {
	t.Helper()
	return strings.Fields(ok(t, "ps", "-q"))
}

func assertNoMount(t *testing.T, id string) {
	t.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	assert.NotContains(t, string(mi), filepath.Join(stateRoot, "containers", id))
}

func TestRunExitCode(t *testing.T) {
	requireEngine(t)
	cleanup(t, "exit7")
	r := berthctl(t, "run", "--rm", "--name", "exit7", "--rootfs", rootfs, "--", "/bin/sh", "-c", "exit 7")
	assert.Equal(t, 7, r.code)
	assert.Empty(t, r.stderr)
	assert.NotContains(t, psIDs(t), "exit7", "--rm deletes the container")
}

func TestRunForwardsOutput(t *testing.T) {
	requireEngine(t)
	r := berthctl(t, "run", "--rm", "--rootfs", rootfs, "--", "/bin/sh", "-c", "echo out; echo err >&2; echo $HOSTNAME")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "out\nberth\n", r.stdout)
	assert.Equal(t, "err\n", r.stderr)
	assert.Empty(t, psIDs(t), "generated-ID container deleted by --rm")
}

// TestRunPhases checks what run prints with BERTH_PHASES: a line per
// phase, from the state directory's opening to the deletion (without it,
// TestRunForwardsOutput's stderr is the container's alone).
func TestRunPhases(t *testing.T) {
	requireEngine(t)
	cmd := exec.Command(bin, "--root", stateRoot, "run", "--rm", "--rootfs", rootfs, "--", "/bin/true")
	cmd.Env = append(os.Environ(), phasesEnv+"=1")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	require.NoError(t, cmd.Run(), errb.String())
	seen := map[string]float64{}
	for _, l := range strings.Split(strings.TrimSuffix(errb.String(), "\n"), "\n") {
		f := strings.Fields(l)
		require.Len(t, f, 3, "line %q", l)
		require.Equal(t, "phase", f[0], "line %q", l)
		ms, err := strconv.ParseFloat(f[2], 64)
		require.NoError(t, err, "line %q", l)
		seen[f[1]] = ms
	}
	for _, p := range []string{"open", "create.record", "create.init/lc.Start", "start.exec", "wait.exit", "delete.destroy"} {
		assert.Greater(t, seen[p], 0.0, "phase %s in %q", p, errb.String())
	}
	assert.Empty(t, psIDs(t), "the container is gone")
}

func TestRunUserNamespace(t *testing.T) {
	requireEngine(t)
	t.Cleanup(func() { os.Remove(filepath.Join(rootfs, "x")) })
	r := berthctl(t, "run", "--rm", "--rootfs", rootfs, "--userns", "--", "/bin/sh", "-c", "cat /proc/self/uid_map; touch /x")
	require.Equal(t, 0, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.NotEmpty(t, lines)
	f := strings.Fields(lines[0])
	require.Len(t, f, 3, "uid_map line %q", lines[0])
	assert.NotEqual(t, []string{"0", "0", "4294967295"}, f, "the container has its own user namespace")
	assert.Equal(t, "0", f[0])
	assert.NotEqual(t, "0", f[1], "container root is not host root")
	fi, err := os.Stat(filepath.Join(rootfs, "x"))
	require.NoError(t, err, "mapped root can write the root filesystem")
	assert.Equal(t, uint32(0), fi.Sys().(*syscall.Stat_t).Uid, "the ID-mapped mount writes as host root")
}

func TestRunResourcesAndEnv(t *testing.T) {
	requireEngine(t)
	script := `echo "$A$B"; ` +
		`cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; ` +
		`cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d" " -f1 /sys/fs/cgroup/cpu.max`
	r := berthctl(t, "run", "--rm", "--rootfs", rootfs, "--memory", "64M", "--cpus", "0.5",
		"--env", "A=1", "--env", "B=2", "--", "/bin/sh", "-c", script)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "12\n67108864\n50000\n", r.stdout)
}

func TestRunStdin(t *testing.T) {
	requireEngine(t)
	r := invoke(t, "hello\n", "--root", stateRoot, "run", "--rm", "-i", "--rootfs", rootfs, "--", "/bin/cat")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "hello\n", r.stdout)

	r = invoke(t, "hello\n", "--root", stateRoot, "run", "--rm", "--rootfs", rootfs, "--", "/bin/cat")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Empty(t, r.stdout, "without -i the container's stdin is not attached")
}

func TestRunBadCommand(t *testing.T) {
	requireEngine(t)
	r := berthctl(t, "run", "--rm", "--name", "nosuchcmd", "--rootfs", rootfs, "--", "/nonexistent")
	requireFailure(t, r, "invalid-argument")
	assert.NotContains(t, psIDs(t), "nosuchcmd")
	assertNoMount(t, "nosuchcmd")
}

// TestRunSignalProxy sends SIGTERM to berthctl run: the container's shell
// traps it and exits 42, which berthctl passes on.
func TestRunSignalProxy(t *testing.T) {
	requireEngine(t)
	cleanup(t, "sigproxy")
	checkSignalProxy(t, "--root", stateRoot, "run", "--rm", "--name", "sigproxy", "--rootfs", rootfs)
	assert.NotContains(t, psIDs(t), "sigproxy")
}

// checkSignalProxy runs `berthctl ARGS -- sh` with a shell that traps TERM,
// sends berthctl SIGTERM once the shell is ready, and checks that the
// shell got it and that berthctl exits with the shell's code, 42.
func checkSignalProxy(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args = append(args, "--", "/bin/sh", "-c", `trap "echo got-term; exit 42" TERM; echo ready; while :; do sleep 0.1; done`)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.WaitDelay = 10 * time.Second
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	sc := bufio.NewScanner(stdout)
	require.True(t, sc.Scan(), "container output: %v", sc.Err())
	require.Equal(t, "ready", sc.Text())
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.True(t, sc.Scan(), "container output after SIGTERM: %v", sc.Err())
	assert.Equal(t, "got-term", sc.Text())
	for sc.Scan() {
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "stderr %q", stderr.String())
	assert.Equal(t, 42, ee.ExitCode(), "stderr %q", stderr.String())
}

// TestLifecycle walks one container through every command.
func TestLifecycle(t *testing.T) {
	requireEngine(t)
	const id = "life"
	cleanup(t, id)

	out := ok(t, "create", "--name", id, "--rootfs", rootfs, "--memory", "64m", "--", "/bin/sh", "-c", "echo hello; exec sleep 300")
	assert.Equal(t, id+"\n", out)
	assert.Equal(t, "created", psRows(t)[id][0])
	requireFailure(t, berthctl(t, "create", "--name", id, "--rootfs", rootfs, "--", "/bin/true"), "already-exists")

	ok(t, "start", id)
	row := psRows(t)[id]
	require.NotNil(t, row)
	assert.Equal(t, "running", row[0])
	assert.NotEqual(t, "-", row[1], "a running container has a pid")
	_, err := time.Parse(time.RFC3339, row[2])
	assert.NoError(t, err, "CREATED is RFC 3339")
	assert.Equal(t, "-", row[3])
	requireFailure(t, berthctl(t, "start", id), "failed-precondition")

	out = ok(t, "exec", "--env", "FOO=bar", "-w", "/tmp", "-u", "1000:1001", id, "--", "/bin/sh", "-c", "echo $FOO; pwd; id -u; id -g")
	assert.Equal(t, "bar\n/tmp\n1000\n1001\n", out)
	r := invoke(t, "hi\n", "--root", stateRoot, "exec", "-i", id, "cat")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "hi\n", r.stdout, "exec -i forwards stdin")
	r = invoke(t, "hi\n", "--root", stateRoot, "exec", id, "cat")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Empty(t, r.stdout, "without -i the process's stdin is not connected")
	r = berthctl(t, "exec", id, "--", "/bin/sh", "-c", "echo to-stderr >&2; exit 3")
	assert.Equal(t, 3, r.code, "exec passes the process's exit code through")
	assert.Equal(t, "to-stderr\n", r.stderr)

	ok(t, "pause", id)
	assert.Equal(t, "paused", psRows(t)[id][0])
	requireFailure(t, berthctl(t, "pause", id), "failed-precondition")
	requireFailure(t, berthctl(t, "exec", id, "--", "/bin/true"), "failed-precondition")
	ok(t, "resume", id)
	assert.Equal(t, "running", psRows(t)[id][0])

	ok(t, "update", id, "--memory", "128m", "--pids", "50", "--cpus", "1")
	stats := ok(t, "stats", id)
	assert.Regexp(t, `(?m)^memory usage:\s+\d+$`, stats)
	assert.Regexp(t, `(?m)^memory limit:\s+134217728$`, stats)
	assert.Regexp(t, `(?m)^cpu time:\s+\S+$`, stats)
	assert.Regexp(t, `(?m)^pids:\s+\d+$`, stats)
	assert.Regexp(t, `(?m)^pids limit:\s+50$`, stats)
	out = ok(t, "exec", id, "--", "/bin/sh", "-c", "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max")
	assert.Equal(t, "100000\n", out)
	requireFailure(t, berthctl(t, "update", id, "--memory", "1k"), "invalid-argument")
	requireFailure(t, berthctl(t, "update", id), "invalid-argument")

	// The shell exec'd sleep as pid 1, which has no TERM handler: the
	// kernel drops the signal, the container lives on.
	ok(t, "kill", id, "TERM")
	requireFailure(t, berthctl(t, "kill", id, "NOSUCHSIG"), "invalid-argument")
	requireFailure(t, berthctl(t, "kill", id, "99"), "invalid-argument")
	requireFailure(t, berthctl(t, "rm", id), "failed-precondition")
	assert.Equal(t, "running", psRows(t)[id][0])

	ok(t, "kill", id)
	assert.Equal(t, "137\n", ok(t, "wait", id))
	row = psRows(t)[id]
	assert.Equal(t, []string{"stopped", "-"}, row[:2])
	assert.Equal(t, "137", row[3])
	assert.Equal(t, "hello\n", ok(t, "logs", id))
	requireFailure(t, berthctl(t, "stats", id), "failed-precondition")
	requireFailure(t, berthctl(t, "kill", id), "failed-precondition")

	ok(t, "rm", id)
	assert.NotContains(t, psIDs(t), id)
	assertNoMount(t, id)
	for _, ctrl := range []string{"pids", "memory", "freezer"} {
		assert.NoDirExists(t, filepath.Join("/sys/fs/cgroup", ctrl, "berth", id), "cgroup removed")
	}
	requireFailure(t, berthctl(t, "rm", id), "not-found")
}

func TestCreateGeneratesID(t *testing.T) {
	requireEngine(t)
	out := ok(t, "create", "--rootfs", rootfs, "--", "/bin/true")
	id := strings.TrimSpace(out)
	cleanup(t, id)
	assert.Regexp(t, "^[0-9a-f]{12}$", id)
	assert.Contains(t, psIDs(t), id)
	ok(t, "rm", id)
	assert.NotContains(t, psIDs(t), id)
}

// TestRmForce removes a running user-namespaced container, whose root
// filesystem is an ID-mapped mount under the state root.
func TestRmForce(t *testing.T) {
	requireEngine(t)
	cleanup(t, "force1")
	cleanup(t, "force2")
	ok(t, "create", "--name", "force1", "--userns", "--rootfs", rootfs, "--", "/bin/sleep", "300")
	ok(t, "start", "force1")
	ok(t, "create", "--name", "force2", "--rootfs", rootfs, "--", "/bin/sleep", "300")
	requireFailure(t, berthctl(t, "rm", "force1"), "failed-precondition")
	ok(t, "rm", "-f", "force1", "force2")
	ids := psIDs(t)
	assert.NotContains(t, ids, "force1")
	assert.NotContains(t, ids, "force2")
	assertNoMount(t, "force1")
}

// TestStop: a container handling TERM ends on it with its own code; one
// ignoring it is killed after -t.
func TestStop(t *testing.T) {
	requireEngine(t)
	cleanup(t, "stopterm")
	cleanup(t, "stopkill")
	ok(t, "create", "--name", "stopterm", "--rootfs", rootfs, "--", "/bin/sh", "-c", "trap 'exit 42' TERM; echo ready; sleep 300 & wait")
	ok(t, "create", "--name", "stopkill", "--rootfs", rootfs, "--", "/bin/sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done")
	ok(t, "start", "stopterm")
	ok(t, "start", "stopkill")
	require.Eventually(t, func() bool { return berthctl(t, "logs", "stopterm").stdout == "ready\n" }, time.Minute, 50*time.Millisecond)
	require.Eventually(t, func() bool { return berthctl(t, "logs", "stopkill").stdout == "ready\n" }, time.Minute, 50*time.Millisecond)
	start := time.Now()
	ok(t, "stop", "-t", "2", "stopterm", "stopkill")
	assert.GreaterOrEqual(t, time.Since(start), 2*time.Second, "the TERM-ignoring container had its grace")
	assert.Equal(t, "42\n", ok(t, "wait", "stopterm"))
	assert.Equal(t, "137\n", ok(t, "wait", "stopkill"))
	ok(t, "stop", "stopterm")
	requireFailure(t, berthctl(t, "stop", "nosuchcontainer"), "not-found")
}

// TestRmReportsEveryFailure: rm goes on past a failure and reports the
// first one's class, on one line.
func TestRmReportsEveryFailure(t *testing.T) {
	requireEngine(t)
	cleanup(t, "rmsome")
	ok(t, "create", "--name", "rmsome", "--rootfs", rootfs, "--", "/bin/true")
	r := berthctl(t, "rm", "nosuch1", "rmsome", "nosuch2")
	requireFailure(t, r, "not-found")
	assert.Contains(t, r.stderr, "nosuch1")
	assert.Contains(t, r.stderr, "nosuch2")
	assert.NotContains(t, psIDs(t), "rmsome")
}

// TestErrorsFromTheLibrary checks the class of refusals that reach the
// backend.
func TestErrorsFromTheLibrary(t *testing.T) {
	requireEngine(t)
	for _, tc := range []struct {
		name  string
		args  []string
		class string
	}{
		{"rm unknown", []string{"rm", "nosuchcontainer"}, "not-found"},
		{"start unknown", []string{"start", "nosuchcontainer"}, "not-found"},
		{"bad ID", []string{"create", "--name", "bad/id", "--rootfs", rootfs, "--", "/bin/true"}, "invalid-argument"},
		{"get with bad ID", []string{"stats", "../x"}, "invalid-argument"},
		{"rootfs not a directory", []string{"create", "--rootfs", "/nonexistent", "--", "/bin/true"}, "invalid-argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireFailure(t, berthctl(t, tc.args...), tc.class)
		})
	}
}

// TestUsageErrors need no engine: berthctl refuses before opening one.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		class string
	}{
		{"unknown backend", []string{"--backend", "nosuch", "ps"}, "not-implemented"},
		{"bad docker host", []string{"--backend", "docker", "--docker-host", "bogus://x", "ps"}, "invalid-argument"},
		{"rootfs and image", []string{"run", "--rootfs", "/", "--image", "bb", "--", "/bin/true"}, "invalid-argument"},
		{"unknown command", []string{"frobnicate"}, "invalid-argument"},
		{"no command", nil, "invalid-argument"},
		{"unknown global flag", []string{"--bogus", "ps"}, "invalid-argument"},
		{"unknown command flag", []string{"run", "--bogus"}, "invalid-argument"},
		{"unknown flag after a global one", []string{"run", "--fsck", "--bogus", "--rootfs", "/", "--", "/bin/true"}, "invalid-argument"},
		{"unknown backend after the command", []string{"ps", "--backend", "nosuch"}, "not-implemented"},
		{"global flag without its value", []string{"ps", "--root"}, "invalid-argument"},
		{"run without rootfs", []string{"run", "--", "/bin/true"}, "invalid-argument"},
		{"run without command", []string{"run", "--rootfs", "/"}, "invalid-argument"},
		{"bad memory", []string{"run", "--memory", "12x", "--rootfs", "/", "--", "/bin/true"}, "invalid-argument"},
		{"bad cpus", []string{"run", "--cpus", "0", "--rootfs", "/", "--", "/bin/true"}, "invalid-argument"},
		{"bad env", []string{"run", "--env", "NOEQUALS", "--rootfs", "/", "--", "/bin/true"}, "invalid-argument"},
		{"start without ID", []string{"start"}, "invalid-argument"},
		{"kill too many", []string{"kill", "a", "b", "c"}, "invalid-argument"},
		{"kill bad signal", []string{"kill", "a", "NOPE"}, "invalid-argument"},
		{"exec relative dir", []string{"exec", "-w", "rel", "a", "--", "/bin/true"}, "invalid-argument"},
		{"exec bad user", []string{"exec", "-u", "root", "a", "--", "/bin/true"}, "invalid-argument"},
		{"exec without command", []string{"exec", "a"}, "invalid-argument"},
		{"ps with argument", []string{"ps", "x"}, "invalid-argument"},
		{"stop without ID", []string{"stop"}, "invalid-argument"},
		{"stop negative grace", []string{"stop", "-t", "-1", "a"}, "invalid-argument"},
		{"help unknown", []string{"help", "frobnicate"}, "invalid-argument"},
		{"insecure registry with a scheme", []string{"--insecure-registry", "http://r.example", "ps"}, "invalid-argument"},
		{"insecure registry with a path", []string{"image", "ls", "--insecure-registry", "r.example/x"}, "invalid-argument"},
		{"empty insecure registry", []string{"--insecure-registry=", "image", "ls"}, "invalid-argument"},
		{"registry mirror without =", []string{"--registry-mirror", "docker.io", "image", "ls"}, "invalid-argument"},
		{"registry mirror not HTTP", []string{"image", "ls", "--registry-mirror", "docker.io=ftp://m.example"}, "invalid-argument"},
		{"registry mirror with a path", []string{"--registry-mirror", "docker.io=https://m.example/v2/x", "ps"}, "invalid-argument"},
		{"registry mirror of a bad host", []string{"--registry-mirror", "a/b=https://m.example", "ps"}, "invalid-argument"},
		{"pull a bad reference", []string{"image", "pull", "BAD REF"}, "invalid-argument"},
		{"pull with a bad tag", []string{"image", "pull", "--tag", "x@sha256:00", "busybox"}, "invalid-argument"},
		{"push to a bad reference", []string{"image", "push", "app:1", "BAD REF"}, "invalid-argument"},
		{"tag to a bad reference", []string{"image", "tag", "app:1", "BAD REF"}, "invalid-argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "state")
			requireFailure(t, invoke(t, "", append([]string{"--root", root}, tc.args...)...), tc.class)
			assert.NoDirExists(t, root, "refused before the backend was opened")
		})
	}
}

// TestGlobalFlagsAnywhere: a global flag means the same before the
// command's name and among the command's flags.
func TestGlobalFlagsAnywhere(t *testing.T) {
	requireEngine(t)
	for _, args := range [][]string{
		{"--root", stateRoot, "--fsck", "--allow-privileged", "run", "--rm", "--rootfs", rootfs, "--", "/bin/echo", "before"},
		{"run", "--root", stateRoot, "--fsck", "--rm", "--allow-privileged", "--rootfs", rootfs, "--", "/bin/echo", "after"},
	} {
		r := invoke(t, "", args...)
		require.Equal(t, 0, r.code, "stderr %q", r.stderr)
		assert.Equal(t, args[len(args)-1]+"\n", r.stdout)
	}
	// --root after the command is the state root the command uses.
	cleanup(t, "globalafter")
	r := invoke(t, "", "create", "--name", "globalafter", "--root", stateRoot, "--rootfs", rootfs, "--", "/bin/true")
	require.Equal(t, 0, r.code, "stderr %q", r.stderr)
	assert.Contains(t, psIDs(t), "globalafter")
	r = invoke(t, "", "ps", "-q", "--root", stateRoot)
	require.Equal(t, 0, r.code, "stderr %q", r.stderr)
	assert.Contains(t, strings.Fields(r.stdout), "globalafter")
	ok(t, "rm", "globalafter")
	// The command's help lists its own flags, not the global ones.
	r = invoke(t, "", "run", "-h")
	assert.NotContains(t, r.stdout, "-fsck")
}

func TestHelpAndVersion(t *testing.T) {
	r := invoke(t, "", "help")
	require.Equal(t, 0, r.code)
	for _, c := range commands {
		assert.Contains(t, r.stdout, "  "+c.name+" ")
	}
	r = invoke(t, "", "run", "-h")
	require.Equal(t, 0, r.code)
	assert.Contains(t, r.stdout, "-rootfs")
	r = invoke(t, "", "--help")
	require.Equal(t, 0, r.code)
	assert.Contains(t, r.stdout, "usage: berthctl")
	r = invoke(t, "", "version")
	require.Equal(t, 0, r.code)
	assert.Regexp(t, `^berthctl \S+ \(go[^;]+; backends: docker, libcontainer, parallels\)\n$`, r.stdout)
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "4096": 4096, "1k": 1 << 10, "1K": 1 << 10, "64m": 64 << 20, "64M": 64 << 20,
		"2g": 2 << 30, "2G": 2 << 30, "8589934591g": 8589934591 << 30,
		"1kb": 1 << 10, "1KiB": 1 << 10, "3MB": 3 << 20, "1t": 1 << 40, "2P": 2 << 50, "512b": 512,
	} {
		got, err := volume.ParseBytes(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "k", "-1", "+5", "1.5g", "1e3", "1 k", "1kib2", "1x", "12x", " 1", "1 ", "8589934592g", "99999999999999999999"} {
		_, err := volume.ParseBytes(in)
		assert.Error(t, err, in)
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{
		"KILL": syscall.SIGKILL, "SIGKILL": syscall.SIGKILL, "term": syscall.SIGTERM,
		"SigHup": syscall.SIGHUP, "9": syscall.SIGKILL, "15": syscall.SIGTERM, "usr1": syscall.SIGUSR1,
	} {
		got, err := parseSignal(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "SIG", "NOPE", "SIGNOPE"} {
		_, err := parseSignal(in)
		assert.True(t, errdefs.IsInvalidArgument(err), "%q: %v", in, err)
	}
}

func TestCPUQuota(t *testing.T) {
	for in, want := range map[string]int64{"0.5": 50000, "1": 100000, "2.25": 225000, "0.001": 100} {
		var c cpus
		require.NoError(t, c.Set(in))
		assert.Equal(t, want, c.quota(), in)
	}
	for _, in := range []string{"0", "-1", "NaN", "Inf", "x", ""} {
		var c cpus
		assert.Error(t, c.Set(in), in)
	}
}

func TestErrorClass(t *testing.T) {
	for want, err := range map[string]error{
		"invalid-argument":    fmt.Errorf("x: %w", errdefs.ErrInvalidArgument),
		"not-found":           fmt.Errorf("x: %w", errdefs.ErrNotFound),
		"already-exists":      fmt.Errorf("x: %w", errdefs.ErrAlreadyExists),
		"failed-precondition": fmt.Errorf("x: %w", errdefs.ErrFailedPrecondition),
		"permission-denied":   fmt.Errorf("x: %w", errdefs.ErrPermissionDenied),
		"not-implemented":     fmt.Errorf("x: %w", errdefs.ErrNotImplemented),
		"resource-exhausted":  fmt.Errorf("x: %w", errdefs.ErrResourceExhausted),
		"unavailable":         fmt.Errorf("x: %w", errdefs.ErrUnavailable),
		"unknown":             errors.New("plain"),
	} {
		assert.Equal(t, want, errclass.Name(err), err.Error())
	}
	assert.Equal(t, "invalid-argument", errclass.Name(usageErrorf("bad")))
	var b bytes.Buffer
	report(&b, fmt.Errorf("line one\nline two\r\nthree\n: %w", errdefs.ErrNotFound))
	assert.Equal(t, "berthctl: not-found: line one line two three : not found\n", b.String())
}

// Detached containers are kept by berth-supervisor when it lies beside
// berthctl (or --supervisor names it), by berthctl itself with
// --supervisor self; a binary that may not be trusted is refused.
func TestSupervisorBinary(t *testing.T) {
	requireEngine(t)
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o711))
	ctl := filepath.Join(dir, "berthctl")
	data, err := os.ReadFile(bin)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(ctl, data, 0o755))
	sup := filepath.Join(dir, "berth-supervisor")
	build := exec.Command(goTool(), "build", "-tags", buildTags, "-o", sup, "../berth-supervisor")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	root := filepath.Join(dir, "state")

	exeOf := func(args ...string) string {
		t.Helper()
		id := strings.TrimSpace(ok(t, append(append([]string{"--root", root}, args...), "create", "--rootfs", rootfs, "--", "/bin/sh", "-c", "exit 7")...))
		ok(t, "--root", root, "start", id)
		var pid int
		for _, p := range procs(t) {
			cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
			if a := strings.Split(string(cmd), "\x00"); len(a) > 2 && a[1] == "berth-supervisor" && a[2] == root {
				pid = p
			}
		}
		require.NotZero(t, pid, "a supervisor keeps %s", id)
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		require.NoError(t, err)
		assert.Equal(t, "7\n", ok(t, "--root", root, "wait", id))
		ok(t, "--root", root, "rm", id)
		// Let it quit, so that the next create starts another.
		require.Eventually(t, func() bool { return syscall.Kill(pid, 0) != nil }, 10*time.Second, 50*time.Millisecond)
		return exe
	}
	t.Run("beside", func(t *testing.T) {
		bin0 := bin
		bin = ctl // berthctl beside berth-supervisor
		defer func() { bin = bin0 }()
		assert.Equal(t, sup, exeOf())
		assert.Equal(t, ctl, exeOf("--supervisor", "self"))
	})
	t.Run("named", func(t *testing.T) {
		assert.Equal(t, sup, exeOf("--supervisor", sup))
	})
	t.Run("refused", func(t *testing.T) {
		require.NoError(t, os.Chmod(sup, 0o775))
		requireFailure(t, invoke(t, "", "--root", root, "--supervisor", sup, "ps"), "invalid-argument")
		requireFailure(t, invoke(t, "", "--root", root, "--supervisor", "berth-supervisor", "ps"), "invalid-argument")
	})
}

// procs lists the host's processes.
func procs(t *testing.T) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var pids []int
	for _, e := range ents {
		if p, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, p)
		}
	}
	return pids
}
