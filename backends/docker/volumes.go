package docker

import (
	"fmt"
	"os"

	"github.com/moby/moby/api/types/mount"

	"github.com/berthrun/berth/runtime/driver"
)

// Volumes reach a Docker container as bind mounts in the spec (see
// bindMount); hot attach is in hotattach_linux.go (driver.VolumeAttacher).
// Root disks are not implemented: Docker's storage driver holds the root
// filesystem, so the backend is no driver.DiskResizer.

// unsupportedRequest refuses root disks of their own: Docker's storage
// driver owns the root filesystem.
func unsupportedRequest(req *driver.CreateRequest) error {
	if req.RootDiskImage != "" {
		return notImplemented("root disks: Docker's storage driver holds the root filesystem")
	}
	return nil
}

// translateRawDevices exposes raw-block volumes (nodes berth made, already
// allowed by the volume policy, which keeps them to user-namespaced
// containers) as bind mounts of the node plus a devices cgroup rule.
// Docker's own --device cannot serve: in a user namespace runc bind-mounts
// the device from the host path equal to the container path. On a
// userns-remap daemon the node goes to the daemon's mapped root, the only
// root the container has.
func translateRawDevices(devs []driver.Device, t *translation) error {
	for _, d := range devs {
		if t.remap != nil && len(t.remap.UID) > 0 && len(t.remap.GID) > 0 {
			if err := os.Chown(d.HostPath, int(t.remap.UID[0].HostID), int(t.remap.GID[0].HostID)); err != nil {
				return fmt.Errorf("raw device %s: %w", d.Path, err)
			}
		}
		access := "rw"
		if d.ReadOnly {
			access = "r"
		}
		t.host.Mounts = append(t.host.Mounts, mount.Mount{Type: mount.TypeBind, Source: d.HostPath, Target: d.Path, ReadOnly: d.ReadOnly})
		t.host.DeviceCgroupRules = append(t.host.DeviceCgroupRules, fmt.Sprintf("b %d:%d %s", d.Major, d.Minor, access))
	}
	return nil
}
