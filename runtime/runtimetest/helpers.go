package runtimetest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/runtime"
)

// timeout bounds every operation of a test, so a hang fails instead of
// stalling the run. It is not a performance assertion.
const timeout = 2 * time.Minute

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// NewID returns a container ID unique to this run.
func NewID(prefix string) string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// buffer is a writer safe for concurrent use that can wait for content.
type buffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func newBuffer() *buffer { return &buffer{changed: make(chan struct{})} }

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.b.Write(p)
	close(b.changed)
	b.changed = make(chan struct{})
	return n, err
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Buffer is a writer safe for concurrent use that can wait for content,
// for backends' own tests of output.
type Buffer struct{ buffer }

// NewBuffer returns an empty Buffer.
func NewBuffer() *Buffer { return &Buffer{buffer{changed: make(chan struct{})}} }

// WaitFor blocks until the output contains s, or ctx ends.
func (b *Buffer) WaitFor(ctx context.Context, s string) error { return b.waitFor(ctx, s) }

// WaitLen blocks until the output holds n bytes at least, or ctx ends.
func (b *Buffer) WaitLen(ctx context.Context, n int) error {
	return b.waitUntil(ctx, func(out []byte) bool { return len(out) >= n }, fmt.Sprintf("%d bytes", n))
}

// Len is the length of the output so far.
func (b *Buffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Len()
}

// waitFor blocks until the output contains s.
func (b *buffer) waitFor(ctx context.Context, s string) error {
	return b.waitUntil(ctx, func(out []byte) bool { return bytes.Contains(out, []byte(s)) }, fmt.Sprintf("%q", s))
}

// waitUntil blocks until ok holds of the output, or ctx ends; what names
// what is waited for.
func (b *buffer) waitUntil(ctx context.Context, ok func([]byte) bool, what string) error {
	for {
		b.mu.Lock()
		done := ok(b.b.Bytes())
		ch := b.changed
		b.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			out := b.String()
			if len(out) > 4096 {
				out = fmt.Sprintf("%d bytes ending %q", len(out), out[len(out)-256:])
			} else {
				out = fmt.Sprintf("%q", out)
			}
			return fmt.Errorf("waiting for %s in output %s: %w", what, out, ctx.Err())
		}
	}
}

// create makes a container and makes sure it is gone when the test ends.
func create(t *testing.T, rt *runtime.Runtime, id string, cfg *runtime.Config) *runtime.Container {
	t.Helper()
	ctx := testContext(t)
	c, err := rt.Create(ctx, id, cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = c.Delete(context.Background(), runtime.DeleteOptions{Force: true})
	})
	return c
}

// cgroupDirs maps each cgroup controller of pid to its directory on the
// host, for cgroup v1 hierarchies and the v2 unified one ("" key).
func cgroupDirs(pid int) (map[string]string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	unified := "/sys/fs/cgroup"
	if _, err := os.Stat("/sys/fs/cgroup/unified"); err == nil {
		unified = "/sys/fs/cgroup/unified"
	}
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			out[""] = filepath.Join(unified, parts[2])
			continue
		}
		for _, ctl := range strings.Split(parts[1], ",") {
			ctl = strings.TrimPrefix(ctl, "name=")
			dir := filepath.Join("/sys/fs/cgroup", ctl, parts[2])
			if _, err := os.Stat(dir); err != nil {
				dir = filepath.Join("/sys/fs/cgroup", parts[1], parts[2])
			}
			out[ctl] = dir
		}
	}
	return out, sc.Err()
}

// cgroupRead reads a controller file of pid's cgroup, trying the v1 name
// then the v2 one.
func cgroupRead(t *testing.T, pid int, controller, v1, v2 string) string {
	t.Helper()
	dirs, err := cgroupDirs(pid)
	require.NoError(t, err)
	if d, ok := dirs[controller]; ok {
		b, err := os.ReadFile(filepath.Join(d, v1))
		require.NoError(t, err)
		return strings.TrimSpace(string(b))
	}
	d, ok := dirs[""]
	require.True(t, ok, "pid %d has no %s cgroup", pid, controller)
	b, err := os.ReadFile(filepath.Join(d, v2))
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}

// ownCgroups lists the cgroup directories the container's init lives in
// that the calling process does not share: the ones Delete must remove.
func ownCgroups(t *testing.T, pid int) []string {
	t.Helper()
	theirs, err := cgroupDirs(pid)
	require.NoError(t, err)
	mine, err := cgroupDirs(os.Getpid())
	require.NoError(t, err)
	var out []string
	for ctl, d := range theirs {
		if mine[ctl] != d {
			out = append(out, d)
		}
	}
	return out
}

// requireGone checks that Delete removed the container, its cgroups and
// whatever the harness reports.
func requireGone(t *testing.T, h Harness, rt *runtime.Runtime, id string, cgroups []string) {
	t.Helper()
	ctx := testContext(t)
	_, err := rt.Get(ctx, id)
	require.Error(t, err)
	require.Truef(t, isNotFound(err), "Get after Delete: %v", err)
	for _, d := range cgroups {
		_, err := os.Stat(d)
		require.Truef(t, os.IsNotExist(err), "cgroup %s left behind", d)
	}
	require.Empty(t, h.Leftovers(t, rt, id), "left behind by %s", id)
}

// execSh runs script through /bin/sh -c in c and returns its output
// (stdout and stderr together) and exit code.
func execSh(ctx context.Context, t *testing.T, c *runtime.Container, script string) (string, int) {
	t.Helper()
	out := newBuffer()
	p, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/sh", "-c", script}}, runtime.IO{Stdout: out, Stderr: out})
	require.NoError(t, err)
	es, err := p.Wait(ctx)
	require.NoError(t, err)
	return out.String(), es.Code
}

// shOut is execSh for a script whose exit code the test does not check.
func shOut(ctx context.Context, t *testing.T, c *runtime.Container, script string) string {
	t.Helper()
	out, _ := execSh(ctx, t, c, script)
	return out
}
