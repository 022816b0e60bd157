package parallels

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/runtime/driver"
)

// The filesystem freeze ioctls (linux/fs.h): FIFREEZE syncs the filesystem,
// flushes the ext4 journal and blocks writers; FITHAW lets them go.
const (
	fiFreeze = 0xC0045877
	fiThaw   = 0xC0045878
)

// ResizeDisk implements driver.DiskResizer: online growth of the root disk.
// The runtime holds the container's owner lock meanwhile.
func (r *Runtime) ResizeDisk(ctx context.Context, id string, size int64) error {
	d, err := r.disk(ctx, id)
	if err != nil {
		return err
	}
	fi, err := os.Stat(d.img)
	if err != nil {
		return fmt.Errorf("disk: %w", errdefs.ErrNotFound)
	}
	size &^= 4095 // whole 4 KiB blocks
	switch {
	case size < fi.Size():
		return fmt.Errorf("disk is %d bytes; shrinking to %d is not supported: %w", fi.Size(), size, errdefs.ErrInvalidArgument)
	case size == fi.Size():
		return nil
	}
	disk, ok := diskFilesystems[d.fsType]
	if !ok {
		return fmt.Errorf("root disk is %s: %w", d.fsType, errdefs.ErrNotImplemented)
	}
	if !hasCapability(disk.growCapability) {
		return fmt.Errorf("growing a mounted %s needs a capability this process lacks: %w", disk.name, errdefs.ErrPermissionDenied)
	}
	if err := os.Truncate(d.img, size); err != nil {
		return err
	}
	f, err := os.OpenFile(d.dev, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	err = unix.IoctlSetInt(int(f.Fd()), unix.LOOP_SET_CAPACITY, 0)
	f.Close()
	if err != nil {
		return fmt.Errorf("LOOP_SET_CAPACITY %s: %w", d.dev, err)
	}
	// The kernel grows the mounted filesystem online.
	return disk.grow(ctx, d.dev, d.mp)
}

// SnapshotDisk implements driver.DiskMaker: it writes a consistent copy of
// the container's disk image to dst (a new file), while the container runs:
// its processes and its filesystem are frozen for the time of a clone or a
// sparse copy. Called through Runtime.As, it is not serialized with the
// runtime's Delete or ResizeDisk of the same container: the caller is.
func (r *Runtime) SnapshotDisk(ctx context.Context, id, dst string) error {
	d, err := r.disk(ctx, id)
	if err != nil {
		return err
	}
	if d.info.Status == driver.StatusRunning {
		if err := r.engine.Pause(ctx, id); err != nil {
			return fmt.Errorf("freeze container: %w", err)
		}
		defer func() { _ = r.engine.Resume(context.Background(), id) }()
	}
	mp, err := os.Open(d.mp)
	if err != nil {
		return err
	}
	defer mp.Close()
	if err := unix.IoctlSetInt(int(mp.Fd()), fiFreeze, 0); err != nil {
		return fmt.Errorf("freeze filesystem: %w", err)
	}
	err = fsutil.CopySparse(d.img, dst)
	if terr := unix.IoctlSetInt(int(mp.Fd()), fiThaw, 0); terr != nil && err == nil {
		err = fmt.Errorf("thaw filesystem: %w", terr)
	}
	if err != nil {
		_ = os.Remove(dst)
	}
	return err
}

// Disk is one container's root disk, as runtime.Container.As reaches it
// (the portable cold move is Container.Export and Runtime.Import).
type Disk struct {
	r  *Runtime
	id string
}

// ContainerAs implements driver.ContainerAser: **Disk.
func (r *Runtime) ContainerAs(id string, i any) bool {
	p, ok := i.(**Disk)
	if ok {
		*p = &Disk{r: r, id: id}
	}
	return ok
}

// Image returns the path of the disk's image file. The file is the
// runtime's: read it, never write, move or remove it.
func (d *Disk) Image(ctx context.Context) (string, error) {
	rd, err := d.r.disk(ctx, d.id)
	if err != nil {
		return "", err
	}
	return rd.img, nil
}

// Snapshot writes a consistent copy of the disk to dst (a new file), even
// while the container runs (SnapshotDisk). It is not serialized with the
// runtime's Delete or ResizeDisk of the same container: the caller is.
func (d *Disk) Snapshot(ctx context.Context, dst string) error {
	return d.r.SnapshotDisk(ctx, d.id, dst)
}
