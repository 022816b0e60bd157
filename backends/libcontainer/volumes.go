package libcontainer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/cgroups/devices/config"
	lc "github.com/opencontainers/runc/libcontainer"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

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
	var tree int
	var dst string
	isFile := false
	switch {
	case a.Device != nil:
		dst, isFile = a.Device.Path, true
		flags := uint64(unix.MOUNT_ATTR_NOSUID)
		if a.Device.ReadOnly {
			flags |= unix.MOUNT_ATTR_RDONLY
		}
		tree, err = detachedBind(a.Device.HostPath, flags, -1)
	case a.Mount != nil && a.Mount.Type == "bind":
		dst = a.Mount.Destination
		userns := -1
		if slices.Contains(a.Mount.Options, "idmap") {
			f, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", st.InitProcessPid))
			if err != nil {
				return fmt.Errorf("container's user namespace: %w", err)
			}
			defer f.Close()
			userns = int(f.Fd())
		}
		tree, err = detachedBind(a.Mount.Source, mountAttrs(a.Mount.Options), userns)
	case a.Mount != nil && a.Mount.Type == "tmpfs":
		dst = a.Mount.Destination
		tree, err = detachedTmpfs(a.Mount.Options, rootUID, rootGID)
	default:
		return fmt.Errorf("volume: unknown attachment: %w", errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return err
	}
	defer unix.Close(tree)
	err = inMountNS(ctx, st.InitProcessPid, rootUID, rootGID, func() error {
		target, err := mountpointInRoot(dst, isFile)
		if err != nil {
			return err
		}
		defer unix.Close(target)
		return unix.MoveMount(tree, "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
	})
	if err == nil {
		// The mount is known by its ID before its device is allowed: a
		// device the container may use is always one a detach finds.
		var mid int
		if mid, err = mountID(tree); err == nil {
			err = r.recordMount(id, dst, volumeMount{ID: mid, Device: a.Device})
		}
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
		err = r.unmountByID(ctx, st.InitProcessPid, rootUID, rootGID, vm.ID)
	} else {
		// A container of an earlier berth: by path, as it did.
		err = inMountNS(ctx, st.InitProcessPid, rootUID, rootGID, func() error {
			var err error
			dev, err = unmountInRoot(dst)
			return err
		})
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

// unmountByID unmounts the mount mid of the container whose init is pid,
// wherever it is now. The tenant may move it while this looks (renaming a
// directory above it): the path read from the mount table is checked
// against the ID in the container's namespace before the unmount, and
// read again if it moved.
func (r *Runtime) unmountByID(ctx context.Context, pid, uid, gid, mid int) error {
	proc, err := unix.Open("/proc", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(proc)
	return inMountNS(ctx, pid, uid, gid, func() error {
		for range 100 {
			where, err := mountpointOf(proc, mid)
			if err != nil || where == "" {
				return err // "": gone, as only berth unmounts it
			}
			moved, err := unmountMountAt(where, mid)
			if err != nil || !moved {
				return err
			}
		}
		return fmt.Errorf("the container keeps moving its volume's mount: %w", errdefs.ErrFailedPrecondition)
	})
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

// mountAttrs turns OCI mount options into mount_setattr flags.
func mountAttrs(opts []string) uint64 {
	var attr uint64
	for _, o := range opts {
		switch o {
		case "ro":
			attr |= unix.MOUNT_ATTR_RDONLY
		case "nosuid":
			attr |= unix.MOUNT_ATTR_NOSUID
		case "nodev":
			attr |= unix.MOUNT_ATTR_NODEV
		case "noexec":
			attr |= unix.MOUNT_ATTR_NOEXEC
		}
	}
	return attr
}

// detachedBind clones src as a mount not attached anywhere yet, with attrs
// set, ID-mapped through the user namespace usernsFD when it is >= 0.
func detachedBind(src string, attrs uint64, usernsFD int) (int, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return -1, fmt.Errorf("open_tree %s: %w", src, err)
	}
	attr := unix.MountAttr{Attr_set: attrs, Propagation: unix.MS_PRIVATE}
	if usernsFD >= 0 {
		attr.Attr_set |= unix.MOUNT_ATTR_IDMAP
		attr.Userns_fd = uint64(usernsFD)
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("mount_setattr %s: %w", src, err)
	}
	return fd, nil
}

// detachedTmpfs makes a tmpfs from OCI options (size, mode, flags), its
// root owned by the container's root.
func detachedTmpfs(opts []string, uid, gid int) (int, error) {
	fsfd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, err
	}
	defer unix.Close(fsfd)
	set := func(k, v string) error { return unix.FsconfigSetString(fsfd, k, v) }
	for _, o := range opts {
		if k, v, ok := strings.Cut(o, "="); ok && (k == "size" || k == "mode") {
			if err := set(k, v); err != nil {
				return -1, fmt.Errorf("tmpfs %s: %w", o, err)
			}
		}
	}
	if err := set("uid", strconv.Itoa(uid)); err != nil {
		return -1, err
	}
	if err := set("gid", strconv.Itoa(gid)); err != nil {
		return -1, err
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fmt.Errorf("tmpfs: %w", err)
	}
	return unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, int(mountAttrs(opts)))
}

// inMountNS runs fn on a thread that has entered the mount namespace of
// pid, with its filesystem IDs set to the container's root (so files it
// creates belong to that root, in and out of a user namespace). The thread
// is thrown away afterwards. There "/" is the container's root: fn works
// on paths inside it only through the in-root helpers below, which never
// follow a link out of it nor block on what the tenant planted. When ctx
// ends first, inMountNS returns its error without waiting for fn.
func inMountNS(ctx context.Context, pid, uid, gid int, fn func() error) error {
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err != nil {
		return fmt.Errorf("container's mount namespace: %w", err)
	}
	errc := make(chan error, 1)
	go func() {
		defer ns.Close()
		errc <- onThrowawayThread(func() error {
			if err := unix.Unshare(unix.CLONE_FS); err != nil {
				return fmt.Errorf("unshare fs: %w", err)
			}
			if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("setns: %w", err)
			}
			unix.Setfsgid(gid)
			unix.Setfsuid(uid)
			return fn()
		})
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
