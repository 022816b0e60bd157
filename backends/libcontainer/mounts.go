package libcontainer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/internal/mountns"
	"github.com/berthrun/berth/runtime/driver"
)

// A volume's mount in a container is known by its mount ID, recorded when
// berth alone had a say in the container's mount table: at create, before
// the container's process runs, and at hot attach, from the mount berth
// moved in. A detach finds the mount by that ID wherever the tenant moved
// it since (renaming a parent directory moves it) and unmounts that mount,
// never whatever now lies at the path.

// mountsFile holds a container's volume mounts by destination.
const mountsFile = "mounts.json"

// volumeMount is one volume's mount in a container.
type volumeMount struct {
	ID int `json:"id"`
	// Device is a raw-block volume's device (nil for mounts): its rule
	// in the devices cgroup goes with the volume, whatever became of the
	// mount.
	Device *driver.Device `json:"device,omitempty"`
}

func (r *Runtime) readMounts(id string) (map[string]volumeMount, error) {
	m := map[string]volumeMount{}
	err := fsutil.ReadJSON(filepath.Join(r.dir(id), mountsFile), &m)
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	return m, err
}

// writeMounts records m without waiting for the disk: mount IDs mean
// nothing once the container's init is gone, as it is after the host's
// crash, and the record is read only while the container runs.
func (r *Runtime) writeMounts(id string, m map[string]volumeMount) error {
	return fsutil.WriteJSONVolatile(filepath.Join(r.dir(id), mountsFile), m)
}

// isBind reports whether mnt is a bind mount, whose mount a container's
// volume record keeps.
func isBind(mnt specs.Mount) bool {
	return mnt.Type == "bind" || slices.Contains(mnt.Options, "bind") || slices.Contains(mnt.Options, "rbind")
}

// recordVolumeMounts records the mount IDs of the volumes of a container
// just created (its process waits on the exec FIFO: nothing of the
// tenant's ran yet): its bind mounts and devices. Each destination is
// resolved in the container's root as the engine resolved it to mount
// there (links in the image followed, within the root), and the mount
// found there is the volume's.
func (r *Runtime) recordVolumeMounts(ctx context.Context, id string, pid, uid, gid int, spec *specs.Spec, devs []driver.Device) error {
	m := map[string]volumeMount{}
	err := mountns.Enter(ctx, pid, uid, gid, func() error {
		root, err := mountns.OpenRoot()
		if err != nil {
			return err
		}
		defer unix.Close(root)
		for _, mnt := range spec.Mounts {
			if !isBind(mnt) {
				continue
			}
			mid, err := mountIDAt(root, mnt.Destination)
			if err != nil {
				return err
			}
			m[filepath.Clean(mnt.Destination)] = volumeMount{ID: mid}
		}
		for _, d := range devs {
			d := d
			mid, err := mountIDAt(root, d.Path)
			if err != nil {
				return err
			}
			m[filepath.Clean(d.Path)] = volumeMount{ID: mid, Device: &d}
		}
		return distinctMounts(m)
	})
	if err != nil {
		return err
	}
	return r.writeMounts(id, m)
}

// mountIDAt returns the ID of the mount at dst, resolved in the root the
// descriptor root opens; dst must be the root of a mount of its own.
func mountIDAt(root int, dst string) (int, error) {
	fd, err := mountns.OpenInRoot(root, dst, unix.O_PATH)
	if err != nil {
		return 0, fmt.Errorf("volume %s: %w", dst, err)
	}
	defer unix.Close(fd)
	// The root of a mount of its own, never the mount it sits
	// in (the root filesystem's): a detach unmounts what this
	// names.
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, 0, &stx); err != nil {
		return 0, err
	}
	if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT == 0 || stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		return 0, fmt.Errorf("volume %s is not mounted at its destination: %w", dst, errdefs.ErrInternal)
	}
	return mountns.MountID(fd)
}

// distinctMounts refuses two destinations that led to one place (a link in
// the root filesystem): they hold one mount, the last, and a detach of
// either would take the other's.
func distinctMounts(m map[string]volumeMount) error {
	seen := map[int]string{}
	for dst, vm := range m {
		if other, ok := seen[vm.ID]; ok {
			return fmt.Errorf("volumes at %s and %s land on one mount point (a link in the root filesystem): %w", other, dst, errdefs.ErrFailedPrecondition)
		}
		seen[vm.ID] = dst
	}
	return nil
}
