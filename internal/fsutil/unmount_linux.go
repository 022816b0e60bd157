package fsutil

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Unmount unmounts, on the host, every mount stacked at the mount point
// mp. A mount still in use (a container's view of it) is detached: gone
// from the host at once, freed by the kernel with its last user. A path
// that is absent or not a mount point is no error. The last component of
// mp is never followed as a symlink.
func Unmount(mp string) error {
	for {
		err := unix.Unmount(mp, unix.UMOUNT_NOFOLLOW)
		if errors.Is(err, unix.EBUSY) {
			err = unix.Unmount(mp, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		}
		switch {
		case err == nil:
			// Another mount may lie underneath.
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil
		default:
			return fmt.Errorf("unmount %s: %w", mp, err)
		}
	}
}
