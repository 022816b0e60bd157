package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/internal/fixture"
)

// crictl, built from the same cri-tools as critest, drives a pod's life
// against berth-cri as a user would.
func TestCrictl(t *testing.T) {
	fixture.RequireRoot(t)
	crictlBin := filepath.Join(critestDir(), "bin", "crictl")
	_, err := os.Stat(crictlBin)
	fixture.Require(t, err == nil, "needs crictl (scripts/setup-critest.sh builds it)")
	root := fixture.TempDir(t)
	busyboxImage(t, root)
	s := startServer(t, root)
	crictl := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(crictlBin, append([]string{"--runtime-endpoint", "unix://" + s.sock, "--image-endpoint", "unix://" + s.sock, "--timeout", "60s"}, args...)...)
		cmd.Env = append(os.Environ(), "CRI_CONFIG_FILE=/dev/null")
		out, err := cmd.Output()
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		require.NoError(t, err, "crictl %s: %s", strings.Join(args, " "), stderr)
		return strings.TrimSpace(string(out))
	}
	dir := t.TempDir()
	logs := filepath.Join(dir, "logs")
	require.NoError(t, os.MkdirAll(logs, 0o755))
	write := func(name string, v any) string {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, b, 0o644))
		return p
	}
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
	require.Empty(t, leftovers(t, root, podID, ctrID))
}
