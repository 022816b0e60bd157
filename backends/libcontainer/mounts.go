package libcontainer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fsutil"
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

func (r *Runtime) writeMounts(id string, m map[string]volumeMount) error {
	return fsutil.WriteJSON(filepath.Join(r.dir(id), mountsFile), m)
}

// recordVolumeMounts records the mount IDs of the volumes of a container
// just created (its process waits on the exec FIFO: nothing of the
// tenant's ran yet): its bind mounts and devices, found by destination in
// the init's mount table.
func (r *Runtime) recordVolumeMounts(id string, pid int, spec *specs.Spec, devs []driver.Device) error {
	infos, err := mountinfo.PidMountInfo(pid)
	if err != nil {
		return err
	}
	top := func(dst string) (int, bool) {
		id, found := 0, false
		for _, i := range infos {
			if i.Mountpoint == filepath.Clean(dst) {
				id, found = i.ID, true // later lines are mounted over earlier ones
			}
		}
		return id, found
	}
	m := map[string]volumeMount{}
	for _, mnt := range spec.Mounts {
		if mnt.Type != "bind" && !slices.Contains(mnt.Options, "bind") && !slices.Contains(mnt.Options, "rbind") {
			continue
		}
		if mid, ok := top(mnt.Destination); ok {
			m[filepath.Clean(mnt.Destination)] = volumeMount{ID: mid}
		}
	}
	for _, d := range devs {
		d := d
		mid, _ := top(d.Path)
		m[filepath.Clean(d.Path)] = volumeMount{ID: mid, Device: &d}
	}
	return r.writeMounts(id, m)
}

// mountID returns the ID of the mount whose root fd is.
func mountID(fd int) (int, error) {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &stx); err != nil {
		return 0, err
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 {
		return 0, fmt.Errorf("statx: no mount ID")
	}
	return int(stx.Mnt_id), nil
}

// mountpointOf returns where the mount mid is now in the mount table of
// pid (a path in the container's root), or "" when it is gone.
func mountpointOf(pid, mid int) (string, error) {
	infos, err := mountinfo.PidMountInfo(pid)
	if err != nil {
		return "", err
	}
	for _, i := range infos {
		if i.ID == mid {
			return i.Mountpoint, nil
		}
	}
	return "", nil
}
