package volume

import (
	"errors"
	"fmt"
	"os"

	"github.com/containerd/errdefs"
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
// nodev (and ro, noexec as asked) down to every submount: the container
// binds mp, so a path the tenant can write cannot be swapped for /etc
// between the check and the mount. A submount of a kernel interface
// filesystem anywhere in the tree refuses the attach.
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
	tree, err := unix.OpenTree(int(src.Fd()), "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("open_tree %s: %w", sp.Source, err)
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV, Propagation: unix.MS_PRIVATE}
	if sp.ReadOnly {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if noexec {
		attr.Attr_set |= unix.MOUNT_ATTR_NOEXEC
	}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		return fmt.Errorf("mount_setattr %s: %w", sp.Source, err)
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
	if err := kernfs.CheckUnder(mp); err != nil {
		_ = unmountDir(mp)
		if errors.Is(err, kernfs.ErrKernelInterface) {
			return fmt.Errorf("source %s holds a %v, which is never a volume: %w", sp.Source, err, errdefs.ErrInvalidArgument)
		}
		return err
	}
	return nil
}
