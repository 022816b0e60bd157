package mountns

import (
	"fmt"
	"os"
	"slices"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/runtime/driver"
)

// Detached prepares, on the host, the detached mount a hot attach moves
// into the container whose init is pid (see MoveInto): a bind of a raw
// device's node (nosuid, read-only if asked), a bind of a volume's host
// mount (ID-mapped through the container's user namespace when its
// options say "idmap"), or a new tmpfs owned by the container's root
// (rootUID, rootGID). It returns the mount's file descriptor, its
// destination in the container and whether that is a file.
func Detached(pid, rootUID, rootGID int, a *driver.Attachment) (tree int, dst string, isFile bool, err error) {
	switch {
	case a.Device != nil:
		flags := uint64(unix.MOUNT_ATTR_NOSUID)
		if a.Device.ReadOnly {
			flags |= unix.MOUNT_ATTR_RDONLY
		}
		tree, err = DetachedBind(a.Device.HostPath, flags, -1)
		return tree, a.Device.Path, true, err
	case a.Mount != nil && a.Mount.Type == "bind":
		userns := -1
		if slices.Contains(a.Mount.Options, "idmap") {
			f, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", pid))
			if err != nil {
				return -1, a.Mount.Destination, false, fmt.Errorf("container's user namespace: %w", err)
			}
			defer f.Close()
			if err := notOwn(f, "/proc/self/ns/user", "user"); err != nil {
				return -1, a.Mount.Destination, false, err
			}
			userns = int(f.Fd())
		}
		tree, err = DetachedBind(a.Mount.Source, MountAttrs(a.Mount.Options), userns)
		return tree, a.Mount.Destination, false, err
	case a.Mount != nil && a.Mount.Type == "tmpfs":
		tree, err = DetachedTmpfs(a.Mount.Options, rootUID, rootGID)
		return tree, a.Mount.Destination, false, err
	}
	return -1, "", false, fmt.Errorf("volume: unknown attachment: %w", errdefs.ErrInvalidArgument)
}
