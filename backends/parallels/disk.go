package parallels

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
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

// Exported is what Export writes next to the disk: enough to create the
// container again on another root (runtime.Config with RootDisk).
type Exported struct {
	// Spec is the container's spec without its root path, user namespace
	// or ID mappings, which the new root gives it.
	Spec          *specs.Spec       `json:"spec"`
	UserNamespace bool              `json:"user_namespace,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	// Disk is the image file's name in the export directory.
	Disk string `json:"disk"`
}

// ExportFile is the name of the config Export writes.
const ExportFile = "container.json"

// Export writes a stopped (or never started) container's disk (disk.img)
// and config (container.json) to dir, for a cold move: delete the
// container here, copy dir anywhere, and create it on another root with
// ReadExport's config. Running containers are refused (failed-precondition).
func (r *Runtime) Export(ctx context.Context, id, dir string) error {
	info, err := r.State(ctx, id)
	if err != nil {
		return err
	}
	if info.Status != driver.StatusStopped && info.Status != driver.StatusCreated {
		return fmt.Errorf("container is %s; stop it before moving it: %w", info.Status, errdefs.ErrFailedPrecondition)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	exp := Exported{Labels: info.Labels, Disk: "disk.img"}
	spec := *info.Spec
	spec.Root = nil
	if spec.Linux != nil {
		l := *spec.Linux
		l.UIDMappings, l.GIDMappings = nil, nil
		l.Namespaces = slices.DeleteFunc(slices.Clone(l.Namespaces), func(n specs.LinuxNamespace) bool {
			if n.Type == specs.UserNamespace {
				exp.UserNamespace = true
				return true
			}
			return false
		})
		spec.Linux = &l
	}
	exp.Spec = &spec
	if err := r.SnapshotDisk(ctx, id, filepath.Join(dir, exp.Disk)); err != nil {
		return err
	}
	return fsutil.WriteJSON(filepath.Join(dir, ExportFile), exp)
}

// ReadExport reads what Export wrote in dir; the disk path is made
// absolute.
func ReadExport(dir string) (*Exported, string, error) {
	var exp Exported
	if err := fsutil.ReadJSON(filepath.Join(dir, ExportFile), &exp); err != nil {
		return nil, "", fmt.Errorf("export %s: %v: %w", dir, err, errdefs.ErrInvalidArgument)
	}
	if exp.Spec == nil || exp.Disk == "" || filepath.Base(exp.Disk) != exp.Disk {
		return nil, "", fmt.Errorf("export %s: incomplete: %w", dir, errdefs.ErrInvalidArgument)
	}
	disk, err := filepath.Abs(filepath.Join(dir, exp.Disk))
	return &exp, disk, err
}
