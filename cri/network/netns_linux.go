package network

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// nsGetNSType is NS_GET_NSTYPE (linux/nsfs.h): _IO(0xb7, 0x3).
const nsGetNSType = 0xb703

var (
	errNotNetNS  = errors.New("not a network namespace")
	errHostNetNS = errors.New("the caller's own network namespace, not a pod's")
	errPinned    = errors.New("pinned already")
)

// openNetNS opens path, checking that it is a network namespace other
// than the calling thread's (the one the plugins run in).
func openNetNS(path string) (int, error) {
	// Non-blocking: a FIFO planted at path does not hold the open up.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("%w: %w", errNotNetNS, err)
	}
	if err := checkNetNSFd(fd); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func checkNetNSFd(fd int) error {
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return fmt.Errorf("%w: %w", errNotNetNS, err)
	}
	if fs.Type != unix.NSFS_MAGIC {
		return errNotNetNS
	}
	if t, err := unix.IoctlRetInt(fd, nsGetNSType); err != nil || t != unix.CLONE_NEWNET {
		return errNotNetNS
	}
	var ns, self unix.Stat_t
	if err := unix.Fstat(fd, &ns); err != nil {
		return fmt.Errorf("%w: %w", errNotNetNS, err)
	}
	if err := unix.Stat("/proc/thread-self/ns/net", &self); err != nil {
		return fmt.Errorf("the caller's network namespace: %w", err)
	}
	if ns.Dev == self.Dev && ns.Ino == self.Ino {
		return errHostNetNS
	}
	return nil
}

// isNetNS reports whether path is a network namespace (a pin that still
// holds one).
func isNetNS(path string) bool {
	fd, err := openNetNS(path)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// pinNetNS bind-mounts the namespace open at fd on pin (a new empty file,
// or one an earlier pin left), so that pin names it until unpinNetNS,
// whatever becomes of the path it was opened by.
func pinNetNS(fd int, pin string) error {
	if err := os.MkdirAll(filepath.Dir(pin), 0o700); err != nil {
		return err
	}
	if isNetNS(pin) {
		return errPinned
	}
	f, err := os.OpenFile(pin, os.O_CREATE|os.O_RDONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", fd), pin, "", unix.MS_BIND, ""); err != nil {
		os.Remove(pin)
		return fmt.Errorf("bind mount on %s: %w", pin, err)
	}
	return nil
}

// unpinNetNS unmounts pin (every mount there) and removes it; a pin that
// is not there is fine.
func unpinNetNS(pin string) error {
	for range 16 {
		err := unix.Unmount(pin, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", pin, err)
		}
	}
	if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
