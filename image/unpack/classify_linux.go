package unpack

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/errclass"
)

func entryErr(name, what string, err error) error {
	if what != "" {
		what += ": "
	}
	return fmt.Errorf("layer entry %q: %s%w", name, what, classify(err))
}

// classify gives system errors their errdefs class.
func classify(err error) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return err
	}
	switch errno {
	case unix.ELOOP:
		return fmt.Errorf("resolves through a symlink: %w", errdefs.ErrInvalidArgument)
	case unix.EXDEV:
		return fmt.Errorf("crosses a mount point: %w", errdefs.ErrInvalidArgument)
	case unix.ENOTDIR:
		return fmt.Errorf("a parent is not a directory: %w", errdefs.ErrInvalidArgument)
	case unix.ENAMETOOLONG:
		return fmt.Errorf("name too long: %w", errdefs.ErrInvalidArgument)
	}
	return errclass.OS(err)
}
