package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/internal/fixture"
)

// crictlCommand is crictl with args against s.
func crictlCommand(bin string, s *server, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, append([]string{"--runtime-endpoint", "unix://" + s.sock, "--image-endpoint", "unix://" + s.sock, "--timeout", "60s"}, args...)...)
	cmd.Env = append(os.Environ(), "CRI_CONFIG_FILE=/dev/null")
	return cmd
}

// crictlSession starts a berth-cri of the test's own, busybox:test in its
// store, and returns crictl's path, the server, and a function that runs
// crictl with args against it and returns its output (the test fails
// with crictl's stderr when it does).
func crictlSession(t *testing.T) (string, *server, func(args ...string) string) {
	t.Helper()
	fixture.RequireRoot(t)
	bin := filepath.Join(critestDir(), "bin", "crictl")
	_, err := os.Stat(bin)
	fixture.Require(t, err == nil, "needs crictl (scripts/setup-critest.sh builds it)")
	root := fixture.TempDir(t)
	busyboxImage(t, root)
	s := startServer(t, root)
	return bin, s, func(args ...string) string {
		t.Helper()
		out, err := crictlCommand(bin, s, args...).Output()
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		require.NoError(t, err, "crictl %s: %s", strings.Join(args, " "), stderr)
		return strings.TrimSpace(string(out))
	}
}

// writeJSON writes v as JSON to dir/name and returns the path.
func writeJSON(t *testing.T, dir, name string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return p
}

// crictl, built from the same cri-tools as critest, drives a pod's life
// against berth-cri as a user would.
func TestCrictl(t *testing.T) {
	_, s, crictl := crictlSession(t)
	dir := t.TempDir()
	write := func(name string, v any) string { return writeJSON(t, dir, name, v) }
	logs := filepath.Join(dir, "logs")
	require.NoError(t, os.MkdirAll(logs, 0o755))
	pod := write("pod.json", map[string]any{
		"metadata":      map[string]any{"name": "crictl", "namespace": "test", "uid": "crictl-uid"},
		"hostname":      "crictl",
		"log_directory": logs,
		"linux":         map[string]any{},
	})
	ctr := write("ctr.json", map[string]any{
		"metadata": map[string]any{"name": "hello"},
		"image":    map[string]any{"image": "busybox:test"},
		"command":  []string{"sh", "-c", "echo hello from berth; sleep 1000"},
		"log_path": "hello.log",
		"linux":    map[string]any{},
	})

	require.Contains(t, crictl("info"), `"RuntimeReady"`)
	require.Contains(t, crictl("images"), "busybox")
	podID := crictl("runp", pod)
	require.Contains(t, crictl("pods", "-q"), podID)
	ctrID := crictl("create", podID, ctr, pod)
	crictl("start", ctrID)
	require.Contains(t, crictl("ps", "-q"), ctrID)
	var inspect struct {
		Status struct{ State string }
	}
	require.NoError(t, json.Unmarshal([]byte(crictl("inspect", ctrID)), &inspect))
	require.Equal(t, "CONTAINER_RUNNING", inspect.Status.State)
	require.Eventually(t, func() bool { return strings.Contains(crictl("logs", ctrID), "hello from berth") }, 10*time.Second, 200*time.Millisecond)
	require.Contains(t, crictl("stats", "-o", "json"), ctrID)
	require.Contains(t, crictl("exec", "-s", ctrID, "hostname"), "crictl")
	crictl("stop", "-t", "1", ctrID)
	crictl("rm", ctrID)
	crictl("stopp", podID)
	crictl("rmp", podID)
	require.NotContains(t, crictl("pods", "-q"), podID)
	crictl("rmi", "busybox:test")
	require.NotContains(t, crictl("images"), "busybox")
	// A pull, from the project's registry on loopback (setup-critest.sh
	// pushed critest's images there).
	ref := "127.0.0.1:5111/e2e-test-images/busybox:1.29-2"
	crictl("pull", ref)
	require.Contains(t, crictl("images"), "127.0.0.1:5111/e2e-test-images/busybox")
	crictl("rmi", ref)
	require.Empty(t, leftovers(t, s.root, podID, ctrID))
}

// terminal is a pseudo-terminal for a client to run in, as a user's: what
// the client writes to it is read from its master into a buffer.
type terminal struct {
	master console.Console
	slave  *os.File
	mu     sync.Mutex
	buf    bytes.Buffer
}

func newTerminal(t *testing.T, rows, cols uint16) *terminal {
	t.Helper()
	m, slavePath, err := console.NewPty()
	require.NoError(t, err)
	require.NoError(t, m.Resize(console.WinSize{Height: rows, Width: cols}))
	slave, err := os.OpenFile(slavePath, os.O_RDWR|syscall.O_NOCTTY, 0)
	require.NoError(t, err)
	tm := &terminal{master: m, slave: slave}
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := m.Read(b)
			tm.mu.Lock()
			tm.buf.Write(b[:n])
			tm.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { slave.Close(); m.Close() })
	return tm
}

// start runs cmd on the terminal, as its controlling terminal (so that a
// resize signals it).
func (tm *terminal) start(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tm.slave, tm.slave, tm.slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	require.NoError(t, cmd.Start())
}

func (tm *terminal) output() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.buf.String()
}

// waitFor waits until the terminal has shown each of want.
func (tm *terminal) waitFor(t *testing.T, want ...string) {
	t.Helper()
	fixture.Eventually(t, func() bool {
		out := tm.output()
		for _, w := range want {
			if !strings.Contains(out, w) {
				return false
			}
		}
		return true
	}, time.Minute, 100*time.Millisecond, func() string {
		return fmt.Sprintf("waiting for %q; the terminal shows %q", want, tm.output())
	})
}

func (tm *terminal) typeIn(t *testing.T, s string) {
	t.Helper()
	_, err := tm.master.Write([]byte(s))
	require.NoError(t, err)
}

// freePort is a TCP port nothing listens on now on 127.0.0.1.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// crictl's streaming commands against berth-cri, as a user at a terminal
// runs them: exec -it (a terminal of the size of the user's, resized with
// it), attach with and without a terminal (a client that goes away leaves
// the container running), port-forward to a web server in the pod.
func TestCrictlStreaming(t *testing.T) {
	crictlBin, s, crictl := crictlSession(t)
	dir := t.TempDir()
	write := func(name string, v any) string { return writeJSON(t, dir, name, v) }
	pod := write("pod.json", map[string]any{
		"metadata": map[string]any{"name": "streams", "namespace": "test", "uid": "streams-uid"},
		"linux":    map[string]any{},
	})
	ctr := func(name string, extra map[string]any, cmd ...string) string {
		c := map[string]any{"metadata": map[string]any{"name": name}, "image": map[string]any{"image": "busybox:test"}, "command": cmd, "linux": map[string]any{}}
		for k, v := range extra {
			c[k] = v
		}
		return write(name+".json", c)
	}
	podID := crictl("runp", pod)
	t.Cleanup(func() { crictlCommand(crictlBin, s, "rmp", "-f", podID).Run() })
	start := func(cfg string) string {
		id := crictl("create", podID, cfg, pod)
		crictl("start", id)
		return id
	}
	web := start(ctr("web", nil, "sh", "-c", "mkdir -p /www && echo hello-httpd > /www/index.html && exec httpd -f -p 8080 -h /www"))
	ttyShell := start(ctr("tty-shell", map[string]any{"tty": true, "stdin": true}, "sh"))
	shell := start(ctr("shell", map[string]any{"stdin": true}, "sh"))

	// exec -it: a shell on a terminal of the user's size, resized with
	// the user's. (Over SPDY only: crictl's WebSocket exec speaks only
	// the v5 protocol, which the kubelet's streaming library does not
	// serve.)
	{
		transport := "spdy"
		tm := newTerminal(t, 40, 100)
		cmd := crictlCommand(crictlBin, s, "exec", "-it", "-r", transport, web, "sh")
		tm.start(t, cmd)
		tm.typeIn(t, "stty size; tty; echo tty-$((6*7)) $TERM\r")
		tm.waitFor(t, "40 100", "/dev/pts/", "tty-42 xterm")
		require.NoError(t, tm.master.Resize(console.WinSize{Height: 50, Width: 120}))
		fixture.Eventually(t, func() bool {
			tm.typeIn(t, "stty size\r")
			time.Sleep(200 * time.Millisecond)
			return strings.Contains(tm.output(), "50 120")
		}, time.Minute, 100*time.Millisecond, func() string { return fmt.Sprintf("the resize did not reach the exec: %q", tm.output()) })
		tm.typeIn(t, "exit 5\r")
		// crictl fails, and says the code.
		require.Error(t, cmd.Wait(), "%s: %q", transport, tm.output())
		tm.waitFor(t, "exit code 5")
	}

	// attach -it to a shell with a terminal; the client goes away, the
	// container goes on, and takes another attachment.
	for range 2 {
		tm := newTerminal(t, 30, 90)
		cmd := crictlCommand(crictlBin, s, "attach", "-it", ttyShell)
		tm.start(t, cmd)
		fixture.Eventually(t, func() bool {
			// The attachment may not be joined yet when the first
			// line is typed.
			tm.typeIn(t, "echo att-$((2+3))\r")
			time.Sleep(200 * time.Millisecond)
			return strings.Contains(tm.output(), "att-5")
		}, time.Minute, 100*time.Millisecond, func() string { return fmt.Sprintf("the terminal shows %q", tm.output()) })
		require.NoError(t, cmd.Process.Kill())
		_ = cmd.Wait()
		require.Contains(t, crictl("inspect", "-o", "go-template", "--template", "{{.status.state}}", ttyShell), "CONTAINER_RUNNING")
	}

	// attach -i without a terminal: stdin and stdout as pipes.
	cmd := crictlCommand(crictlBin, s, "attach", "-i", shell)
	in, err := cmd.StdinPipe()
	require.NoError(t, err)
	var out fixture.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	fixture.Eventually(t, func() bool {
		_, err := in.Write([]byte("echo plain-$((3+4))\n"))
		require.NoError(t, err)
		time.Sleep(200 * time.Millisecond)
		return strings.Contains(out.String(), "plain-7")
	}, time.Minute, 100*time.Millisecond, func() string { return fmt.Sprintf("crictl shows %q", out.String()) })
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	require.Contains(t, crictl("inspect", "-o", "go-template", "--template", "{{.status.state}}", shell), "CONTAINER_RUNNING")

	// port-forward to the web server, fetched through a local port. (Over
	// SPDY only: crictl's WebSocket port-forward tunnels SPDY, which
	// the kubelet's streaming library does not serve.)
	{
		transport := "spdy"
		port := freePort(t)
		cmd := crictlCommand(crictlBin, s, "port-forward", "-r", transport, podID, fmt.Sprintf("%d:8080", port))
		var log fixture.SyncBuffer
		cmd.Stdout, cmd.Stderr = &log, &log
		require.NoError(t, cmd.Start())
		for i := range 3 {
			var body []byte
			fixture.Eventually(t, func() bool {
				resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/index.html", port))
				if err != nil {
					return false
				}
				defer resp.Body.Close()
				body, err = io.ReadAll(resp.Body)
				return err == nil && resp.StatusCode == http.StatusOK
			}, time.Minute, 200*time.Millisecond, func() string { return fmt.Sprintf("%s fetch %d; crictl says %s", transport, i, log.String()) })
			require.Equal(t, "hello-httpd\n", string(body))
		}
		require.NoError(t, cmd.Process.Kill())
		_ = cmd.Wait()
	}

	crictl("rmp", "-f", podID)
	require.Empty(t, leftovers(t, s.root, podID, web, ttyShell, shell))
}
