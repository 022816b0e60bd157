package mountns

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime/driver"
)

// The pid a hot attach or detach reaches the container by is read from the
// engine a moment before: if the init exited meanwhile and a process of the
// host took its pid (a tenant can make its init exit, and cycle pids), or
// the container shares the host's namespaces, the mount would be made on
// the host. Simulated with this test's own pid: every entry point refuses,
// and nothing is mounted on the host.
func TestHostNamespacesRefused(t *testing.T) {
	fixture.RequireRoot(t)
	ctx := context.Background()
	dst := filepath.Join(t.TempDir(), "volume")
	t.Cleanup(func() {
		if m, _ := mountinfo.Mounted(dst); m {
			_ = unix.Unmount(dst, unix.MNT_DETACH)
		}
	})

	tree, err := DetachedTmpfs([]string{"size=1m"}, 0, 0)
	require.NoError(t, err)
	defer unix.Close(tree)
	_, err = MoveInto(ctx, os.Getpid(), 0, 0, tree, dst, false)
	require.Truef(t, errdefs.IsFailedPrecondition(err), "move into the host's mount namespace: %v", err)
	mounted, _ := mountinfo.Mounted(dst)
	require.False(t, mounted, "a mount was made on the host at %s", dst)

	_, err = UnmountPath(ctx, os.Getpid(), 0, 0, dst)
	require.Truef(t, errdefs.IsFailedPrecondition(err), "unmount in the host's mount namespace: %v", err)
	require.Truef(t, errdefs.IsFailedPrecondition(UnmountByID(ctx, os.Getpid(), 0, 0, 1)), "unmount by ID in the host's mount namespace")

	src := t.TempDir()
	_, _, _, err = Detached(os.Getpid(), 0, 0, &driver.Attachment{Mount: &specs.Mount{Type: "bind", Source: src, Destination: "/data", Options: []string{"idmap"}}})
	require.Truef(t, errdefs.IsFailedPrecondition(err), "ID mapping through the host's user namespace: %v", err)
}
