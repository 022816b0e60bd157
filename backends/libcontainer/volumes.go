package libcontainer

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/opencontainers/cgroups/devices/config"
	lc "github.com/opencontainers/runc/libcontainer"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/mountns"
	"github.com/berthrun/berth/runtime/driver"
)

// withDevices adds raw-block devices to a spec: a bind mount of berth's
// node (owned by the container's root, which works in a user namespace
// where mknod does not) and a devices cgroup rule for it.
func withDevices(spec *specs.Spec, devs []driver.Device) *specs.Spec {
	if len(devs) == 0 {
		return spec
	}
	s := *spec
	s.Mounts = slices.Clone(spec.Mounts)
	l := *spec.Linux
	res := specs.LinuxResources{}
	if l.Resources != nil {
		res = *l.Resources
	}
	res.Devices = slices.Clone(res.Devices)
	for _, d := range devs {
		opts := []string{"bind", "nosuid"}
		if d.ReadOnly {
			opts = append(opts, "ro")
		}
		s.Mounts = append(s.Mounts, specs.Mount{Destination: d.Path, Type: "bind", Source: d.HostPath, Options: opts})
		major, minor := int64(d.Major), int64(d.Minor)
		res.Devices = append(res.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: "b", Major: &major, Minor: &minor, Access: access(d)})
	}
	l.Resources = &res
	s.Linux = &l
	return &s
}

func access(d driver.Device) string {
	if d.ReadOnly {
		return "r"
	}
	return "rw"
}

// AttachVolume implements driver.Runtime: the mount is prepared on the host
// as a detached mount (open_tree or fsmount), then moved into the
// container's mount namespace; a device is also allowed in its cgroup.
func (r *Runtime) AttachVolume(ctx context.Context, id string, a *driver.Attachment) error {
	c, st, rootUID, rootGID, err := r.running(id)
	if err != nil {
		return err
	}
	tree, dst, isFile, err := mountns.Detached(st.InitProcessPid, rootUID, rootGID, a)
	if err != nil {
		return err
	}
	defer unix.Close(tree)
	// The mount is known by its ID before its device is allowed: a
	// device the container may use is always one a detach finds.
	mid, err := mountns.MoveInto(ctx, st.InitProcessPid, rootUID, rootGID, tree, dst, isFile)
	if err == nil {
		err = r.recordMount(id, dst, volumeMount{ID: mid, Device: a.Device})
		if err == nil && a.Device != nil {
			err = r.allowDevice(c, *a.Device, true)
		}
		if err != nil {
			_ = r.DetachVolume(context.WithoutCancel(ctx), id, dst)
		}
	}
	if err != nil {
		return fmt.Errorf("volume %s: mount in container: %w", dst, classify(err))
	}
	return nil
}

func (r *Runtime) recordMount(id, dst string, vm volumeMount) error {
	m, err := r.readMounts(id)
	if err != nil {
		return err
	}
	m[filepath.Clean(dst)] = vm
	return r.writeMounts(id, m)
}

// running loads a container with its state and the host IDs of its root.
func (r *Runtime) running(id string) (c *lc.Container, st *lc.State, rootUID, rootGID int, err error) {
	if c, err = r.load(id); err != nil {
		return nil, nil, 0, 0, err
	}
	if st, err = c.State(); err != nil {
		return nil, nil, 0, 0, classify(err)
	}
	if cfg := c.Config(); len(cfg.UIDMappings) > 0 {
		rootUID, rootGID = int(cfg.UIDMappings[0].HostID), int(cfg.GIDMappings[0].HostID)
	}
	return c, st, rootUID, rootGID, nil
}

// DetachVolume implements driver.Runtime: the volume's mount is found by
// its ID (see mounts.go) and unmounted, and a device's rule leaves the
// devices cgroup whatever became of its mount.
func (r *Runtime) DetachVolume(ctx context.Context, id, dst string) error {
	c, st, rootUID, rootGID, err := r.running(id)
	if err != nil {
		return err
	}
	dst = filepath.Clean(dst)
	mounts, err := r.readMounts(id)
	if err != nil {
		return err
	}
	vm, known := mounts[dst]
	var dev *unix.Stat_t
	if known {
		err = mountns.UnmountByID(ctx, st.InitProcessPid, rootUID, rootGID, vm.ID)
	} else {
		// A container of an earlier berth: by path, as it did.
		dev, err = mountns.UnmountPath(ctx, st.InitProcessPid, rootUID, rootGID, dst)
	}
	if err != nil {
		return fmt.Errorf("volume %s: %w", dst, classify(err))
	}
	var d *driver.Device
	switch {
	case vm.Device != nil:
		d = vm.Device
	case dev != nil:
		d = &driver.Device{Major: unix.Major(dev.Rdev), Minor: unix.Minor(dev.Rdev)}
	}
	if d != nil {
		if err := r.allowDevice(c, *d, false); err != nil {
			return err
		}
	}
	if known {
		delete(mounts, dst)
		return r.writeMounts(id, mounts)
	}
	return nil
}

// allowDevice adds (or removes) a device's rule in the container's cgroup
// through libcontainer, so its recorded config stays in step.
func (r *Runtime) allowDevice(c *lc.Container, d driver.Device, allow bool) error {
	cfg := c.Config()
	cg := *cfg.Cgroups
	res := *cg.Resources
	res.Devices = slices.DeleteFunc(slices.Clone(res.Devices), func(rule *config.Rule) bool {
		return rule.Type == config.BlockDevice && rule.Major == int64(d.Major) && rule.Minor == int64(d.Minor) && rule.Allow
	})
	if allow {
		res.Devices = append(res.Devices, &config.Rule{Type: config.BlockDevice, Major: int64(d.Major), Minor: int64(d.Minor), Permissions: config.Permissions(access(d)), Allow: true})
	}
	cg.Resources = &res
	cfg.Cgroups = &cg
	if err := c.Set(cfg); err != nil {
		return fmt.Errorf("devices cgroup: %w", classify(err))
	}
	return nil
}
