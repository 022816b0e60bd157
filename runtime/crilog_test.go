package runtime

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/runtime/driver"
)

// criDriver is a fake backend that writes CRI logs: its containers run
// once created, and it counts the reopens it was asked for.
type criDriver struct {
	*fakeDriver
	status  driver.Status
	reopens []string
}

func (d *criDriver) Capabilities() driver.Capabilities {
	c := d.fakeDriver.Capabilities()
	c.CRILog = true
	return c
}

func (d *criDriver) State(ctx context.Context, id string) (*driver.Info, error) {
	i, err := d.fakeDriver.State(ctx, id)
	if err == nil {
		i.Status = d.status
	}
	return i, err
}

func (d *criDriver) ReopenCRILog(ctx context.Context, id string) error {
	d.reopens = append(d.reopens, id)
	return nil
}

func newCRIRuntime(t *testing.T) (*Runtime, *criDriver) {
	d := &criDriver{fakeDriver: &fakeDriver{created: map[string]*driver.CreateRequest{}}}
	rt, err := New(d, WithStateDir(t.TempDir()), withIDDir(t.TempDir()))
	require.NoError(t, err)
	return rt, d
}

// The CRI log's path reaches the backend when it is absolute, clean and
// in a directory that exists; anything else is invalid-argument, naming
// the container, before the backend sees it.
func TestCRILogPath(t *testing.T) {
	rt, d := newCRIRuntime(t)
	ctx := context.Background()
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	for name, path := range map[string]string{
		"relative":          "pods/0.log",
		"unclean":           dir + "/../" + filepath.Base(dir) + "/0.log",
		"trailing slash":    dir + "/0.log/",
		"root":              "/",
		"missing directory": filepath.Join(dir, "missing", "0.log"),
		"file as directory": filepath.Join(file, "0.log"),
	} {
		_, err := rt.Create(ctx, "bad", &Config{Spec: DefaultSpec(t.TempDir(), "/bin/true"), CRILog: path})
		require.Truef(t, errdefs.IsInvalidArgument(err), "%s: %v", name, err)
		require.Containsf(t, err.Error(), `"bad"`, "%s names the container", name)
	}
	require.Empty(t, d.created, "the backend saw none of them")

	path := filepath.Join(dir, "0.log")
	c, err := rt.Create(ctx, "good", &Config{Spec: DefaultSpec(t.TempDir(), "/bin/true"), CRILog: path})
	require.NoError(t, err)
	require.Equal(t, path, d.created["good"].CRILog)

	// ReopenLog reaches the backend for a running (or paused)
	// container only.
	for _, st := range []driver.Status{driver.StatusCreated, driver.StatusStopped, driver.StatusUnknown} {
		d.status = st
		err := c.ReopenLog(ctx)
		require.Truef(t, errdefs.IsFailedPrecondition(err), "%s: %v", st, err)
		require.Contains(t, err.Error(), `"good"`)
	}
	require.Empty(t, d.reopens)
	for _, st := range []driver.Status{driver.StatusRunning, driver.StatusPaused} {
		d.status = st
		require.NoError(t, c.ReopenLog(ctx), st)
	}
	require.Equal(t, []string{"good", "good"}, d.reopens)
}
