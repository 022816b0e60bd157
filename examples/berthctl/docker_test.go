package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/internal/fixture/dockerd"
)

// dockerHost is the plain daemon scripts/setup-docker.sh starts
// (BERTH_DOCKER_HOST points elsewhere).
var dockerHost = func() string {
	if h := os.Getenv("BERTH_DOCKER_HOST"); h != "" {
		return h
	}
	return "unix:///run/docker.sock"
}()

var dockerAnswers = sync.OnceValue(func() error {
	if err := dockerd.Answers(context.Background(), dockerHost); err != nil {
		return fmt.Errorf("no Docker daemon answers at %s (scripts/setup-docker.sh starts one): %w", dockerHost, err)
	}
	return nil
})

// dockerCtl runs berthctl on the Docker backend with a scope (--root) of
// its own, so that tests running in parallel never see each other's
// containers; when the test ends the scope must be empty.
type dockerCtl struct {
	t     *testing.T
	root  string
	image string
}

func newDockerCtl(t *testing.T) *dockerCtl {
	t.Helper()
	fixture.RequireRoot(t)
	err := dockerAnswers()
	fixture.Require(t, err == nil, fmt.Sprint(err))
	requireEngine(t)
	// Images come from the store under --root: Docker gets only archives
	// berth wrote.
	d := &dockerCtl{t: t, root: t.TempDir(), image: "bb:latest"}
	r := invoke(t, "", "--root", d.root, "image", "import", "--expect-tag", d.image, busyboxArchive(t))
	require.Equal(t, 0, r.code, r.stderr)
	t.Cleanup(func() {
		r := d.run("", "ps", "-q")
		if ids := strings.Fields(r.stdout); len(ids) > 0 {
			t.Errorf("containers left: %v", ids)
			d.run("", append([]string{"rm", "-f"}, ids...)...)
		}
	})
	return d
}

func (d *dockerCtl) run(stdin string, args ...string) result {
	d.t.Helper()
	return invoke(d.t, stdin, append([]string{"--backend", "docker", "--docker-host", dockerHost, "--root", d.root}, args...)...)
}

func (d *dockerCtl) ok(args ...string) string {
	d.t.Helper()
	r := d.run("", args...)
	require.Equal(d.t, 0, r.code, "berthctl %v: stderr %q", args, r.stderr)
	return r.stdout
}

func (d *dockerCtl) status(id string) []string {
	d.t.Helper()
	for _, l := range strings.Split(d.ok("ps"), "\n")[1:] {
		if f := strings.Fields(l); len(f) == 5 && f[0] == id {
			return f[1:]
		}
	}
	return nil
}

func TestDockerRun(t *testing.T) {
	t.Parallel()
	d := newDockerCtl(t)
	r := d.run("", "run", "--rm", "--name", "exit7", "--image", d.image, "--", "/bin/sh", "-c", "exit 7")
	assert.Equal(t, 7, r.code, r.stderr)
	assert.Empty(t, r.stderr)

	r = d.run("", "run", "--rm", "--image", d.image, "--env", "A=1", "--", "/bin/sh", "-c", "echo out$A; echo err >&2; echo $HOSTNAME")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "out1\nberth\n", r.stdout)
	assert.Equal(t, "err\n", r.stderr)

	r = d.run("hello\n", "run", "--rm", "-i", "--image", d.image, "--", "/bin/cat")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "hello\n", r.stdout)
	r = d.run("hello\n", "run", "--rm", "--image", d.image, "--", "/bin/cat")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Empty(t, r.stdout, "without -i the container's stdin is not attached")

	script := `cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; ` +
		`cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d" " -f1 /sys/fs/cgroup/cpu.max; ` +
		`cat /proc/net/dev | grep -c :`
	r = d.run("", "run", "--rm", "--image", d.image, "--memory", "64M", "--cpus", "0.5", "--", "/bin/sh", "-c", script)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "67108864\n50000\n1\n", r.stdout, "limits seen from inside; loopback only")
}

// What the Docker backend cannot do is refused with the class saying so.
func TestDockerRefusals(t *testing.T) {
	t.Parallel()
	d := newDockerCtl(t)
	requireFailure(t, d.run("", "run", "--rm", "--rootfs", t.TempDir(), "--", "/bin/true"), "not-implemented")
	requireFailure(t, d.run("", "run", "--rm", "--userns", "--image", d.image, "--", "/bin/true"), "not-implemented")
	requireFailure(t, d.run("", "run", "--rm", "--image", "berthrun-fixture/none:missing", "--", "/bin/true"), "not-found")
	requireFailure(t, d.run("", "run", "--rm", "--name", "badcmd", "--image", d.image, "--", "/nonexistent"), "invalid-argument")
	requireFailure(t, d.run("", "run", "--rm", "--disk-size", "1g", "--image", d.image, "--", "/bin/true"), "not-implemented")
}

// TestDockerLifecycle walks one container through every command.
func TestDockerLifecycle(t *testing.T) {
	t.Parallel()
	d := newDockerCtl(t)
	const id = "life"
	assert.Equal(t, id+"\n", d.ok("create", "--name", id, "--image", d.image, "--memory", "64m", "--", "/bin/sh", "-c", "echo hello; exec sleep 300"))
	assert.Equal(t, "created", d.status(id)[0])
	requireFailure(t, d.run("", "create", "--name", id, "--image", d.image, "--", "/bin/true"), "already-exists")

	d.ok("start", id)
	row := d.status(id)
	assert.Equal(t, "running", row[0])
	assert.NotEqual(t, "-", row[1], "a running container has a pid")
	requireFailure(t, d.run("", "start", id), "failed-precondition")

	out := d.ok("exec", "--env", "FOO=bar", "-w", "/tmp", "-u", "1000:1001", id, "--", "/bin/sh", "-c", "echo $FOO; pwd; id -u; id -g")
	assert.Equal(t, "bar\n/tmp\n1000\n1001\n", out)
	r := d.run("hi\n", "exec", "-i", id, "cat")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "hi\n", r.stdout, "exec -i forwards stdin")
	r = d.run("hi\n", "exec", id, "cat")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Empty(t, r.stdout, "without -i the process's stdin is not connected")
	r = d.run("", "exec", id, "--", "/bin/sh", "-c", "echo to-stderr >&2; exit 3")
	assert.Equal(t, 3, r.code, "exec passes the process's exit code through")
	assert.Equal(t, "to-stderr\n", r.stderr)

	d.ok("pause", id)
	assert.Equal(t, "paused", d.status(id)[0])
	requireFailure(t, d.run("", "pause", id), "failed-precondition")
	requireFailure(t, d.run("", "exec", id, "--", "/bin/true"), "failed-precondition")
	d.ok("resume", id)

	d.ok("update", id, "--memory", "128m", "--pids", "50", "--cpus", "1")
	stats := d.ok("stats", id)
	assert.Regexp(t, `(?m)^memory limit:\s+134217728$`, stats)
	assert.Regexp(t, `(?m)^pids limit:\s+50$`, stats)
	assert.Regexp(t, `(?m)^pids:\s+1$`, stats)
	assert.Equal(t, "100000\n", d.ok("exec", id, "--", "/bin/sh", "-c", "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max"))
	requireFailure(t, d.run("", "update", id, "--memory", "1k"), "invalid-argument")

	// sleep is PID 1 without a TERM handler: the signal is dropped.
	d.ok("kill", id, "TERM")
	requireFailure(t, d.run("", "rm", id), "failed-precondition")
	assert.Equal(t, "running", d.status(id)[0])

	d.ok("kill", id)
	assert.Equal(t, "137\n", d.ok("wait", id))
	row = d.status(id)
	assert.Equal(t, []string{"stopped", "-"}, row[:2])
	assert.Equal(t, "137", row[3])
	assert.Equal(t, "hello\n", d.ok("logs", id))
	requireFailure(t, d.run("", "kill", id), "failed-precondition")

	d.ok("rm", id)
	assert.Nil(t, d.status(id))
	requireFailure(t, d.run("", "rm", id), "not-found")
}

// SIGTERM to `berthctl run` reaches the container, whose exit code berthctl
// passes on; --rm removes it.
func TestDockerSignalProxy(t *testing.T) {
	t.Parallel()
	d := newDockerCtl(t)
	checkSignalProxy(t, "--backend", "docker", "--docker-host", dockerHost, "--root", d.root, "run", "--rm", "--name", "sigproxy", "--image", d.image)
	assert.Nil(t, d.status("sigproxy"))
}

// TestDockerLogs: the output of a run container is kept by the daemon,
// capped as asked, and logs -f follows a running one to its end.
func TestDockerLogs(t *testing.T) {
	t.Parallel()
	d := newDockerCtl(t)
	r := d.run("", "run", "--name", "dlogs", "--log-max-size", "64k", "--log-max-files", "3", "--image", d.image, "--", "/bin/sh", "-c", "echo one; sleep 0.3; echo two")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "one\ntwo\n", r.stdout)
	assert.Equal(t, "one\ntwo\n", d.ok("logs", "dlogs"))
	assert.Equal(t, "two\n", d.ok("logs", "--tail", "1", "dlogs"))
	if docker, err := exec.LookPath("docker"); err == nil {
		cmd := exec.Command(docker, "inspect", "-f", "{{.HostConfig.LogConfig.Type}} {{index .HostConfig.LogConfig.Config \"max-size\"}} {{index .HostConfig.LogConfig.Config \"max-file\"}}", "dlogs")
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+dockerHost)
		out, err := cmd.Output()
		require.NoError(t, err)
		if f := strings.Fields(string(out)); len(f) > 0 && (f[0] == "json-file" || f[0] == "local") {
			assert.Equal(t, []string{f[0], "65536", "3"}, f, "the daemon caps the log")
		}
	}
	d.ok("rm", "dlogs")

	d.ok("create", "--name", "dfollow", "--image", d.image, "--", "/bin/sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.3; done")
	d.ok("start", "dfollow")
	r = d.run("", "logs", "-f", "dfollow")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "line1\nline2\nline3\n", r.stdout)
	assert.Equal(t, "0\n", d.ok("wait", "dfollow"))
	d.ok("rm", "dfollow")
}
