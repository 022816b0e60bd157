package image

import (
	"fmt"
	"os"

	"github.com/berthrun/berth/internal/errclass"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

func (d *dirSource) open(p string) (*os.File, error) {
	how := &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV}
	fd, err := unix.Openat2(d.root, p, how)
	for err == unix.EINTR || err == unix.EAGAIN {
		fd, err = unix.Openat2(d.root, p, how)
	}
	if err == unix.ELOOP {
		return nil, fmt.Errorf("layout file %q is reached through a symlink: %w", p, errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return nil, errclass.OS(&os.PathError{Op: "open", Path: p, Err: err})
	}
	f := os.NewFile(uintptr(fd), p)
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("layout file %q is not a regular file: %w", p, errdefs.ErrInvalidArgument)
	}
	return f, nil
}
