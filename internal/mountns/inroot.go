package mountns

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// The helpers below run in a container's mount namespace (Enter), where
// every path is the tenant's to shape: links, FIFOs, device nodes planted
// where berth will look. Paths resolve inside the container's root and
// never through a magic link (RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS);
// what berth opens it opens O_PATH, so nothing blocks, and it checks the
// type of the opened file before acting on it.

func OpenRoot() (int, error) {
	return unix.Openat2(unix.AT_FDCWD, "/", &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC})
}

func OpenInRoot(root int, path string, flags int) (int, error) {
	fd, err := unix.Openat2(root, path, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
		return -1, fmt.Errorf("%s in the container leads through a link berth does not follow: %w: %w", path, err, errdefs.ErrFailedPrecondition)
	}
	return fd, err
}

// fileType names a stat mode's type for messages.
func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symbolic link"
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFBLK:
		return "block device"
	case unix.S_IFCHR:
		return "character device"
	}
	return "file of unknown type"
}

// mkdirAllInRoot opens dir (absolute in the container) as an O_PATH
// directory, creating missing components with mode 0755.
func mkdirAllInRoot(root int, dir string) (int, error) {
	rel := strings.TrimPrefix(filepath.Clean(dir), "/")
	cur, err := OpenInRoot(root, ".", unix.O_PATH|unix.O_DIRECTORY)
	if err != nil || rel == "" {
		return cur, err
	}
	parts := strings.Split(rel, "/")
	for i, p := range parts {
		prefix := strings.Join(parts[:i+1], "/")
		next, err := OpenInRoot(root, prefix, unix.O_PATH|unix.O_DIRECTORY)
		if errors.Is(err, unix.ENOENT) {
			if err := unix.Mkdirat(cur, p, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
				unix.Close(cur)
				return -1, fmt.Errorf("mkdir /%s: %w", prefix, err)
			}
			next, err = OpenInRoot(root, prefix, unix.O_PATH|unix.O_DIRECTORY)
		}
		unix.Close(cur)
		if errors.Is(err, unix.ENOTDIR) {
			return -1, fmt.Errorf("/%s is not a directory: %w", prefix, errdefs.ErrFailedPrecondition)
		}
		if err != nil {
			return -1, fmt.Errorf("open /%s: %w", prefix, err)
		}
		cur = next
	}
	return cur, nil
}

// mountpointInRoot returns an O_PATH descriptor of dst, a directory, or a
// regular file when file is set (a device's bind), creating it and its
// parents if missing. Anything else found there (a FIFO, a link, a device
// node, a file of the wrong kind) refuses the attach with
// failed-precondition.
func mountpointInRoot(dst string, file bool) (int, error) {
	root, err := OpenRoot()
	if err != nil {
		return -1, err
	}
	defer unix.Close(root)
	parent, err := mkdirAllInRoot(root, filepath.Dir(dst))
	if err != nil {
		return -1, err
	}
	defer unix.Close(parent)
	base := filepath.Base(dst)
	want := uint32(unix.S_IFDIR)
	if file {
		want = unix.S_IFREG
		fd, err := unix.Openat(parent, base, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0o600)
		if err == nil {
			unix.Close(fd)
		} else if !errors.Is(err, unix.EEXIST) {
			return -1, fmt.Errorf("create %s: %w", dst, err)
		}
	} else if err := unix.Mkdirat(parent, base, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, fmt.Errorf("mkdir %s: %w", dst, err)
	}
	fd, err := unix.Openat(parent, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", dst, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if st.Mode&unix.S_IFMT != want {
		unix.Close(fd)
		return -1, fmt.Errorf("destination %s in the container is a %s, not a %s: %w", dst, fileType(st.Mode), fileType(want), errdefs.ErrFailedPrecondition)
	}
	return fd, nil
}

// unmountInRoot detaches the mount at dst and, when a device was bound
// there, removes its placeholder file; it returns the device's stat, or nil
// for another mount. Nothing mounted at dst (already gone) is not an error.
func unmountInRoot(dst string) (*unix.Stat_t, error) {
	root, err := OpenRoot()
	if err != nil {
		return nil, err
	}
	defer unix.Close(root)
	parent, err := OpenInRoot(root, filepath.Dir(dst), unix.O_PATH|unix.O_DIRECTORY)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", filepath.Dir(dst), err)
	}
	defer unix.Close(parent)
	base := filepath.Base(dst)
	var st unix.Stat_t
	if err := unix.Fstatat(parent, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, err
	}
	var dev *unix.Stat_t
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		dev = &st
	case unix.S_IFDIR, unix.S_IFREG:
	default:
		// berth mounts on directories and regular files only, and a
		// mount point cannot be replaced: nothing of berth's is there.
		return nil, nil
	}
	// The thread's working directory is its own (Enter unshares
	// CLONE_FS): umount2 then resolves one name in the opened parent, and
	// never follows a link there.
	if err := unix.Fchdir(parent); err != nil {
		return nil, err
	}
	if err := unix.Unmount(base, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil && !errors.Is(err, unix.EINVAL) {
		return nil, fmt.Errorf("unmount %s: %w", dst, err)
	}
	if dev != nil {
		_ = unix.Unlinkat(parent, base, 0) // the placeholder of a device bind
	}
	return dev, nil
}

// unmountMountAt unmounts the mount mid at where (read from the mount
// table) after checking, on the opened parent, that the mount there is
// mid: moved reports that it is not (the tenant moved it meanwhile; read
// the table again). A device bind's placeholder file goes too.
func unmountMountAt(where string, mid int) (moved bool, err error) {
	root, err := OpenRoot()
	if err != nil {
		return false, err
	}
	defer unix.Close(root)
	parent, err := OpenInRoot(root, filepath.Dir(where), unix.O_PATH|unix.O_DIRECTORY)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errdefs.IsFailedPrecondition(err) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	defer unix.Close(parent)
	base := filepath.Base(where)
	var stx unix.Statx_t
	if err := unix.Statx(parent, base, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID|unix.STATX_TYPE, &stx); err != nil || int(stx.Mnt_id) != mid {
		return true, nil
	}
	// The thread's working directory is its own (Enter unshares
	// CLONE_FS): umount2 resolves one name in the opened parent, where a
	// mount point cannot be renamed or replaced.
	if err := unix.Fchdir(parent); err != nil {
		return false, err
	}
	if err := unix.Unmount(base, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil {
		return false, fmt.Errorf("unmount %s: %w", where, err)
	}
	if uint32(stx.Mode)&unix.S_IFMT == unix.S_IFBLK {
		var st unix.Stat_t
		if unix.Fstatat(parent, base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0 {
			_ = unix.Unlinkat(parent, base, 0) // the placeholder of a device bind
		}
	}
	return false, nil
}
