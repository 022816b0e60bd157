package mountns

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/idmap"
)

// Enter runs fn on a thread that has entered the mount namespace of pid,
// with its filesystem IDs set to the container's root (so files it creates
// belong to that root, in and out of a user namespace). The thread is
// thrown away afterwards. There "/" is the container's root: fn works on
// paths inside it only through OpenRoot and OpenInRoot (and the helpers of
// this package), which never follow a link out of it nor block on what the
// tenant planted. When ctx ends first, Enter returns its error without
// waiting for fn.
func Enter(ctx context.Context, pid, uid, gid int, fn func() error) error {
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err != nil {
		return fmt.Errorf("container's mount namespace: %w", err)
	}
	if err := notOwn(ns, "/proc/self/ns/mnt", "mount"); err != nil {
		ns.Close()
		return err
	}
	errc := make(chan error, 1)
	go func() {
		defer ns.Close()
		errc <- OnThrowawayThread(func() error {
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

// notOwn refuses the namespace open as ns when it is this process's own
// (own names it in /proc/self/ns): the container's init, read from the
// engine a moment before, has exited and its pid was taken by a process
// of the host, or the container shares the host's namespace. What berth
// would do there (mount a volume, unmount, map IDs) would reach the host.
func notOwn(ns *os.File, own, kind string) error {
	var a, b unix.Stat_t
	if err := unix.Fstat(int(ns.Fd()), &a); err != nil {
		return fmt.Errorf("container's %s namespace: %w", kind, err)
	}
	if err := unix.Stat(own, &b); err != nil {
		return fmt.Errorf("host's %s namespace: %w", kind, err)
	}
	if a.Dev == b.Dev && a.Ino == b.Ino {
		return fmt.Errorf("the process is in the host's %s namespace (the container's init is gone, or it shares the host's): %w", kind, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// MoveInto moves the detached mount tree (from DetachedBind or
// DetachedTmpfs) to dst in the mount namespace of pid, creating dst (a
// directory, or an empty regular file when file is set, for a device's
// bind) and its parents as the container's root (uid, gid) if missing, and
// returns the mount's ID. What the tenant planted at dst or on the way
// (a link, a FIFO, a file of the wrong kind) refuses the move with
// failed-precondition and is left as it was.
func MoveInto(ctx context.Context, pid, uid, gid, tree int, dst string, file bool) (int, error) {
	err := Enter(ctx, pid, uid, gid, func() error {
		target, err := mountpointInRoot(dst, file)
		if err != nil {
			return err
		}
		defer unix.Close(target)
		return unix.MoveMount(tree, "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
	})
	if err != nil {
		return 0, err
	}
	mid, err := MountID(tree)
	if err != nil {
		// Never left in the container unknown: a detach could not find it.
		_, _ = UnmountPath(context.WithoutCancel(ctx), pid, uid, gid, dst)
		return 0, err
	}
	return mid, nil
}

// UnmountByID unmounts the mount mid of the container whose init is pid,
// wherever it is now. The tenant may move it while this looks (renaming a
// directory above it): the path read from the mount table is checked
// against the ID in the container's namespace before the unmount, and read
// again if it moved. A mount already gone is not an error.
func UnmountByID(ctx context.Context, pid, uid, gid, mid int) error {
	proc, err := unix.Open("/proc", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(proc)
	return Enter(ctx, pid, uid, gid, func() error {
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

// UnmountPath unmounts what is mounted at dst in the mount namespace of
// pid, for a volume whose mount ID is not known (one mounted by an engine
// before the tenant ran, where berth could not read it first). It returns
// the stat of a device bound there, or nil. Nothing mounted at dst is not
// an error.
func UnmountPath(ctx context.Context, pid, uid, gid int, dst string) (*unix.Stat_t, error) {
	var dev *unix.Stat_t
	err := Enter(ctx, pid, uid, gid, func() error {
		var err error
		dev, err = unmountInRoot(dst)
		return err
	})
	return dev, err
}

// MountAttrs turns OCI mount options into mount_setattr flags.
func MountAttrs(opts []string) uint64 {
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

// DetachedBind clones src as a mount not attached anywhere yet, with attrs
// set and private propagation, ID-mapped through the user namespace
// usernsFD when it is >= 0 (idmap.DetachedBind).
func DetachedBind(src string, attrs uint64, usernsFD int) (int, error) {
	return idmap.DetachedBind(src, unix.MountAttr{Attr_set: attrs, Propagation: unix.MS_PRIVATE}, usernsFD)
}

// DetachedTmpfs makes a tmpfs from OCI options (size, mode, flags), its
// root owned by the container's root.
func DetachedTmpfs(opts []string, uid, gid int) (int, error) {
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
	return unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, int(MountAttrs(opts)))
}

// MountID returns the ID of the mount whose root fd is.
func MountID(fd int) (int, error) {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &stx); err != nil {
		return 0, err
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 {
		return 0, fmt.Errorf("statx: no mount ID")
	}
	return int(stx.Mnt_id), nil
}

// mountpointOf returns where the mount mid is in the mount namespace of
// the calling thread, relative to its root (for a thread Enter entered:
// the container's root, whatever root the container's own processes
// chose), or "" when it is gone. proc is the host's /proc, opened before
// the thread left the host's mount namespace.
func mountpointOf(proc, mid int) (string, error) {
	fd, err := unix.Openat(proc, "thread-self/mountinfo", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("mount table: %w", err)
	}
	f := os.NewFile(uintptr(fd), "mountinfo")
	defer f.Close()
	infos, err := mountinfo.GetMountsFromReader(f, func(i *mountinfo.Info) (skip, stop bool) {
		return i.ID != mid, i.ID == mid
	})
	if err != nil || len(infos) == 0 {
		return "", err
	}
	return infos[0].Mountpoint, nil
}
