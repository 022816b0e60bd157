package runtime

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/internal/loop"
	"github.com/berthrun/berth/runtime/driver"
	"github.com/berthrun/berth/volume"
)

const childEnv = "BERTH_RUNTIME_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "attach" {
		os.Exit(attachChild())
	}
	os.Exit(m.Run())
}

// diskDriver is a backend whose one container "c1" lives in files under
// dir, so that it outlives the process that attaches to it: it runs while
// dir/c1 exists; AttachVolume announces itself and never returns (the
// process is killed there); DetachVolume logs to dir/detached, or fails
// while dir/stuck exists (a backend that cannot reach the container).
type diskDriver struct {
	fakeDriver
	dir string
}

func (d *diskDriver) Capabilities() driver.Capabilities {
	return driver.Capabilities{UserNamespace: true, RawBlock: true, HotAttach: true}
}

func (d *diskDriver) State(ctx context.Context, id string) (*driver.Info, error) {
	if _, err := os.Stat(filepath.Join(d.dir, id)); err != nil {
		return nil, errdefs.ErrNotFound
	}
	m := []specs.LinuxIDMapping{{HostID: 300000, Size: 65536}}
	return &driver.Info{ID: id, Status: driver.StatusRunning, Spec: &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.UserNamespace}}, UIDMappings: m, GIDMappings: m}}}, nil
}

func (d *diskDriver) AttachVolume(ctx context.Context, id string, a *driver.Attachment) error {
	os.Stdout.WriteString("in-driver\n")
	time.Sleep(time.Hour)
	return nil
}

func (d *diskDriver) DetachVolume(ctx context.Context, id, dst string) error {
	if _, err := os.Stat(filepath.Join(d.dir, "stuck")); err == nil {
		return errors.New("cannot reach the container")
	}
	f, err := os.OpenFile(filepath.Join(d.dir, "detached"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(dst + "\n")
	return err
}

func openDisk(dir string) (*Runtime, error) {
	return New(&diskDriver{dir: dir}, WithStateDir(filepath.Join(dir, "state")), withIDDir(filepath.Join(dir, "ids")))
}

func attachChild() int {
	rt, err := openDisk(os.Getenv("BERTH_TEST_DIR"))
	if err == nil {
		var c *Container
		if c, err = rt.Get(context.Background(), "c1"); err == nil {
			err = c.AttachVolume(context.Background(), volume.Spec{Source: os.Getenv("BERTH_TEST_IMAGE"), Destination: "/dev/vdb", Mode: volume.ModeRawBlock})
		}
	}
	os.Stdout.WriteString("returned " + errString(err) + "\n")
	return 1
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

func loopsBacking(t *testing.T, img string) []string {
	bound, err := loop.Backing()
	require.NoError(t, err)
	var out []string
	for dev, f := range bound {
		if f == img {
			out = append(out, dev)
		}
	}
	return out
}

// A hot attach killed while the backend puts the volume in the container
// leaves nothing recorded: the next runtime takes the volume out of the
// container first, then off the host. While the backend cannot reach the
// container, the volume stays as it is — a raw device the container might
// hold is never released for another tenant to get.
func TestKilledAttachLeavesNothing(t *testing.T) {
	fixture.RequireRoot(t)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "c1"), nil, 0o600))
	img := filepath.Join(t.TempDir(), "raw.img")
	require.NoError(t, os.WriteFile(img, make([]byte, 4<<20), 0o600))

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=attach", "BERTH_TEST_DIR="+dir, "BERTH_TEST_IMAGE="+img)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "in-driver\n", line)
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	require.Len(t, loopsBacking(t, img), 1, "the killed attach had the device ready")

	// A runtime whose backend cannot reach the container keeps it all.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "stuck"), nil, 0o600))
	rt, err := openDisk(dir)
	require.NoError(t, err, "what a container holds never keeps a runtime from opening")
	require.Len(t, loopsBacking(t, img), 1, "a device the container may hold was released")
	c, err := rt.Get(context.Background(), "c1")
	require.NoError(t, err)
	vols, err := c.Volumes(context.Background())
	require.NoError(t, err)
	require.Empty(t, vols, "the unfinished attach is not listed as attached")

	require.NoError(t, os.Remove(filepath.Join(dir, "stuck")))
	rt, err = openDisk(dir)
	require.NoError(t, err)
	b, err := os.ReadFile(filepath.Join(dir, "detached"))
	require.NoError(t, err)
	require.Equal(t, "/dev/vdb\n", string(b), "the volume was taken out of the container first")
	require.Empty(t, loopsBacking(t, img))
	nodes, err := os.ReadDir(filepath.Join(dir, "state", "volumes", "dev"))
	require.NoError(t, err)
	require.Empty(t, nodes)
	// The container may have opened the device before the kill: the
	// image stays its own (a retired record) until it is gone.
	recs, err := os.ReadDir(filepath.Join(dir, "state", "volumes", "records"))
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Contains(t, recs[0].Name(), ".retired.")
	require.NoError(t, rt.volumes.DetachAll(context.Background(), "c1"))
	recs, err = os.ReadDir(filepath.Join(dir, "state", "volumes", "records"))
	require.NoError(t, err)
	require.Empty(t, recs)
}
