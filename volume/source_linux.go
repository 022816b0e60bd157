package volume

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/kernfs"
)

// openChecked opens a resolved source (Spec.resolve) for an attach: without
// following any link (a path component a tenant swapped for a link since
// it was resolved fails the open), without blocking (a FIFO planted in its
// place is refused, not waited on), and only if it is still the kind of
// file resolve found. Image files and directories on a kernel interface
// filesystem (proc, sysfs, cgroup, devtmpfs...) are refused: through a loop
// device a file such as /proc/kcore or /proc/1/mem would become a tenant's
// disk, and a bind of cgroupfs or /dev hands it the host's devices. flags
// are the open flags (O_RDONLY, O_RDWR or O_PATH).
func openChecked(sp Spec, flags int) (*os.File, error) {
	how := flags | unix.O_NOFOLLOW | unix.O_CLOEXEC
	if flags&unix.O_PATH == 0 {
		how |= unix.O_NONBLOCK | unix.O_NOCTTY
	}
	fd, err := unix.Openat2(unix.AT_FDCWD, sp.Source, &unix.OpenHow{
		Flags:   uint64(how),
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	switch {
	case errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOTDIR):
		return nil, fmt.Errorf("source %s changed since it was resolved (a link, or a file of another kind, in its path): %w", sp.Source, errdefs.ErrInvalidArgument)
	case errors.Is(err, unix.ENOENT):
		return nil, fmt.Errorf("source %s: %w", sp.Source, errdefs.ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("open source %s: %w", sp.Source, err)
	}
	f := os.NewFile(uintptr(fd), sp.Source)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, err
	}
	want := map[Kind]uint32{KindBlock: unix.S_IFBLK, KindImage: unix.S_IFREG, KindFile: unix.S_IFREG, KindDir: unix.S_IFDIR}[sp.Kind]
	if st.Mode&unix.S_IFMT != want {
		f.Close()
		return nil, fmt.Errorf("source %s is no longer a %s: %w", sp.Source, sp.Kind, errdefs.ErrInvalidArgument)
	}
	if sp.Kind == KindBlock {
		// The host's own nodes, on devtmpfs: a node anyone with
		// CAP_MKNOD made elsewhere (a tenant, in a share) names any
		// device, another tenant's disk among them.
		if t, err := kernfs.TypeOf(fd); err != nil || t != "devtmpfs" {
			f.Close()
			if err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("source %s is a block device node on %s, not the host's /dev (devtmpfs): %w", sp.Source, t, errdefs.ErrInvalidArgument)
		}
	} else {
		if err := kernfs.Check(fd); err != nil {
			f.Close()
			if errors.Is(err, kernfs.ErrKernelInterface) {
				return nil, fmt.Errorf("source %s is on a %v, which is never a volume: %w", sp.Source, err, errdefs.ErrInvalidArgument)
			}
			return nil, err
		}
	}
	if flags&unix.O_PATH == 0 {
		// The blocking mode the I/O expects, now that it is no FIFO.
		if err := unix.SetNonblock(fd, false); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

// bindSource mounts a directory or file source at mp (under the
// manager's mnt/) from the opened source itself, recursively, nosuid and
// nodev (and noexec as asked) down to every submount: the container
// binds mp, so a path the tenant can write cannot be swapped for /etc
// between the check and the mount. Read-only reaches every submount too,
// unless NonRecursiveReadOnly. A submount of a kernel interface
// filesystem anywhere in the tree refuses the attach.
//
// The mount is a copy of the source's (open_tree's clone is a peer of a
// shared source, as a bind is) with the propagation asked, recursively:
// private, a slave of the source's peer group, or its peer. It is set
// again once the mount is in place, because moving a tree under a shared
// mount (the state directory's, under systemd) makes every mount in it
// shared.
func bindSource(sp Spec, mp string, noexec bool) error {
	flags := unix.O_PATH
	if sp.Kind == KindDir {
		flags |= unix.O_DIRECTORY
	}
	src, err := openChecked(sp, flags)
	if err != nil {
		return err
	}
	defer src.Close()
	var prop uint64
	switch sp.Propagation {
	case "", PropagationPrivate:
		prop = unix.MS_PRIVATE
	case PropagationSlave:
		prop = unix.MS_SLAVE
	}
	if sp.hasPropagation() {
		if err := propagates(sp, src); err != nil {
			return err
		}
	}
	tree, err := unix.OpenTree(int(src.Fd()), "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("open_tree %s: %w", sp.Source, err)
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV, Propagation: prop}
	if sp.ReadOnly && !sp.NonRecursiveReadOnly {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if noexec {
		attr.Attr_set |= unix.MOUNT_ATTR_NOEXEC
	}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		return fmt.Errorf("mount_setattr %s: %w", sp.Source, err)
	}
	if sp.ReadOnly && sp.NonRecursiveReadOnly {
		if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
			return fmt.Errorf("mount_setattr %s: %w", sp.Source, err)
		}
	}
	if sp.Kind == KindDir {
		err = os.Mkdir(mp, 0o700)
	} else {
		var f *os.File
		if f, err = os.OpenFile(mp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600); err == nil {
			f.Close()
		}
	}
	if err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, mp, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		_ = os.Remove(mp)
		return fmt.Errorf("move_mount %s: %w", mp, err)
	}
	hook("mounted")
	if prop != 0 {
		if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &unix.MountAttr{Propagation: prop}); err != nil {
			_ = unmountDir(mp)
			return fmt.Errorf("mount_setattr %s: %w", mp, err)
		}
	}
	if err := kernfs.CheckUnder(mp); err != nil {
		_ = unmountDir(mp)
		if errors.Is(err, kernfs.ErrKernelInterface) {
			return fmt.Errorf("source %s holds a %v, which is never a volume: %w", sp.Source, err, errdefs.ErrInvalidArgument)
		}
		return err
	}
	return nil
}

// propagates checks that the mount the opened source src is on
// propagates as sp asks it to: a shared mount for shared propagation, a
// shared or slave one for slave. Without, berth's copy would receive
// nothing from the host (nor give it anything), whatever the container
// asked.
func propagates(sp Spec, src *os.File) error {
	id, err := mountIDOf(src)
	if err != nil {
		return err
	}
	ms, err := mountinfo.GetMounts(func(i *mountinfo.Info) (skip, stop bool) { return i.ID != id, i.ID == id })
	if err != nil {
		return err
	}
	if len(ms) != 1 {
		return fmt.Errorf("source %s: mount %d not in this mount namespace: %w", sp.Source, id, errdefs.ErrFailedPrecondition)
	}
	mi := ms[0]
	shared := strings.Contains(" "+mi.Optional, " shared:")
	slave := strings.Contains(" "+mi.Optional, " master:")
	switch {
	case sp.Propagation == PropagationShared && !shared:
		return fmt.Errorf("source %s is on %s, a mount that is not shared (%s): mounts cannot propagate both ways (make it shared: mount --make-rshared): %w",
			sp.Source, mi.Mountpoint, propagationName(mi.Optional), errdefs.ErrFailedPrecondition)
	case sp.Propagation == PropagationSlave && !shared && !slave:
		return fmt.Errorf("source %s is on %s, a mount that is neither shared nor a slave (private): the host's mounts cannot propagate (make it shared: mount --make-rshared): %w",
			sp.Source, mi.Mountpoint, errdefs.ErrFailedPrecondition)
	}
	return nil
}

func propagationName(optional string) string {
	if strings.Contains(" "+optional, " master:") {
		return "a slave"
	}
	return "private"
}

// mountIDOf returns the ID of the mount f is on (as /proc/self/mountinfo
// numbers it).
func mountIDOf(f *os.File) (int, error) {
	var stx unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &stx); err != nil {
		return 0, fmt.Errorf("statx %s: %w", f.Name(), err)
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 {
		return 0, fmt.Errorf("statx %s: no mount ID", f.Name())
	}
	return int(stx.Mnt_id), nil
}
