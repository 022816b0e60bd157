package volume

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/loop"
)

// identityOf names the opened source for sharing and exclusivity: a
// block device by its number and, where the kernel counts them, its disk
// sequence (a device the host made anew under the same number is another
// device); an image file by its device and inode.
func identityOf(f *os.File, sp Spec) (string, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", err
	}
	if sp.Kind == KindBlock {
		id := fmt.Sprintf("blk:%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		if seq, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/diskseq", unix.Major(st.Rdev), unix.Minor(st.Rdev))); err == nil {
			id += ":" + strings.TrimSpace(string(seq))
		}
		return id, nil
	}
	return fmt.Sprintf("file:%d:%d", st.Dev, st.Ino), nil
}

// exclusive refuses a read-write attach of a source in use, and any attach
// of a source attached read-write: only read-only attachments share.
func exclusive(rec *record, recs []*record, src *os.File) error {
	for _, r := range recs {
		if r.Identity != rec.Identity {
			continue
		}
		if r.Retired {
			if r.Owner == rec.Owner {
				continue // its own descriptors: no one else's data
			}
			return fmt.Errorf("source %s was detached from %s, which may still hold it (until it is deleted): %w", rec.Spec.Source, r.Owner, errdefs.ErrFailedPrecondition)
		}
		if !r.Spec.ReadOnly || !rec.Spec.ReadOnly || r.Spec.Mode == ModeRawBlock || rec.Spec.Mode == ModeRawBlock {
			return fmt.Errorf("source %s is attached to %s at %s; only read-only host mounts share: %w", rec.Spec.Source, r.Owner, r.Spec.Destination, errdefs.ErrFailedPrecondition)
		}
	}
	if sharedMountOf(rec, recs) {
		return nil
	}
	// Not ours to share: a source the host itself uses is refused.
	var st unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &st); err != nil {
		return err
	}
	if rec.Spec.Kind == KindBlock {
		major, minor := unix.Major(st.Rdev), unix.Minor(st.Rdev)
		mounted, err := mountinfo.GetMounts(func(i *mountinfo.Info) (skip, stop bool) {
			return uint32(i.Major) != major || uint32(i.Minor) != minor, false
		})
		if err != nil {
			return err
		}
		if len(mounted) > 0 {
			return fmt.Errorf("block device %s is mounted at %s: %w", rec.Spec.Source, mounted[0].Mountpoint, errdefs.ErrFailedPrecondition)
		}
		// A device the kernel has claimed (mounted, a partition of it
		// mounted, held by device-mapper, md or swap) refuses O_EXCL.
		fd, err := unix.Open(rec.Spec.Source, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("block device %s is in use on the host: %w", rec.Spec.Source, errdefs.ErrFailedPrecondition)
		}
		if err == nil {
			unix.Close(fd)
		}
	}
	// Nor one a loop device is bound to: an image berth or the host has
	// attached; a block device a container reaches through a loop device
	// of berth's (raw) or a mount over one (read-only), which keeps its
	// hold, visible here, as long as anything of the container's holds
	// it: a descriptor it kept, parked in a socket, mapped, or handed to
	// another container.
	bound, err := loop.BackedBy(st.Dev, st.Ino)
	if err != nil {
		return err
	}
	if len(bound) > 0 {
		return fmt.Errorf("%s %s is already attached on %s: %w", rec.Spec.Kind, rec.Spec.Source, bound[0], errdefs.ErrFailedPrecondition)
	}
	return nil
}
