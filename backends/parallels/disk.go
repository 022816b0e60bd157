package parallels

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/internal/tarutil"
	"github.com/berthrun/berth/runtime/driver"
	"github.com/berthrun/berth/volume"
)

// The filesystem freeze ioctls (linux/fs.h): FIFREEZE syncs the filesystem,
// flushes the ext4 journal and blocks writers; FITHAW lets them go.
const (
	fiFreeze = 0xC0045877
	fiThaw   = 0xC0045878
)

// ResizeDisk implements driver.Runtime: online growth of the root disk.
func (r *Runtime) ResizeDisk(ctx context.Context, id string, size int64) error {
	unlock, err := r.disks.LockOwner(id)
	if err != nil {
		return err
	}
	defer unlock()
	img := r.diskPath(id)
	fi, err := os.Stat(img)
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
	mp, err := r.mountpoint(id)
	if err != nil {
		return err
	}
	mi, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(mp))
	if err != nil || len(mi) != 1 || !strings.HasPrefix(mi[0].Source, "/dev/loop") {
		return fmt.Errorf("root disk of %s is not mounted from a loop device: %w", id, errdefs.ErrFailedPrecondition)
	}
	dev := mi[0].Source
	disk, ok := diskFilesystems[mi[0].FSType]
	if !ok {
		return fmt.Errorf("root disk is %s: %w", mi[0].FSType, errdefs.ErrNotImplemented)
	}
	if !hasCapability(disk.growCapability) {
		return fmt.Errorf("growing a mounted %s needs a capability this process lacks: %w", disk.name, errdefs.ErrPermissionDenied)
	}
	if err := os.Truncate(img, size); err != nil {
		return err
	}
	f, err := os.OpenFile(dev, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	err = unix.IoctlSetInt(int(f.Fd()), unix.LOOP_SET_CAPACITY, 0)
	f.Close()
	if err != nil {
		return fmt.Errorf("LOOP_SET_CAPACITY %s: %w", dev, err)
	}
	// The kernel grows the mounted filesystem online.
	return disk.grow(ctx, dev, mp)
}

// SnapshotDisk writes a consistent copy of the container's disk image to
// dst (a new file), while the container runs: its processes and its
// filesystem are frozen for the time of a clone or a sparse copy.
func (r *Runtime) SnapshotDisk(ctx context.Context, id, dst string) error {
	unlock, err := r.disks.LockOwner(id)
	if err != nil {
		return err
	}
	defer unlock()
	return r.snapshotDisk(ctx, id, dst)
}

func (r *Runtime) snapshotDisk(ctx context.Context, id, dst string) error {
	mp, err := r.mountpoint(id)
	if err != nil {
		return err
	}
	info, err := r.engine.State(ctx, id)
	if err != nil {
		return err
	}
	if info.Status == driver.StatusRunning {
		if err := r.engine.Pause(ctx, id); err != nil {
			return fmt.Errorf("freeze container: %w", err)
		}
		defer func() { _ = r.engine.Resume(context.Background(), id) }()
	}
	d, err := os.Open(mp)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.IoctlSetInt(int(d.Fd()), fiFreeze, 0); err != nil {
		return fmt.Errorf("freeze filesystem: %w", err)
	}
	err = copySparse(r.diskPath(id), dst)
	if terr := unix.IoctlSetInt(int(d.Fd()), fiThaw, 0); terr != nil && err == nil {
		err = fmt.Errorf("thaw filesystem: %w", terr)
	}
	if err != nil {
		_ = os.Remove(dst)
	}
	return err
}

// copySparse copies src to a new file dst: a reflink where the filesystem
// shares blocks (FICLONE), otherwise only the data extents, so holes stay
// holes.
func copySparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = copyInto(in, out)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(dst)
	}
	return err
}

func copyInto(in, out *os.File) error {
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) == nil {
		return nil
	}
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return err
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		for rOff, wOff := data, data; rOff < hole; {
			n, err := unix.CopyFileRange(int(in.Fd()), &rOff, int(out.Fd()), &wOff, int(hole-rOff), 0)
			if err != nil {
				return err
			}
			if n == 0 {
				return io.ErrUnexpectedEOF
			}
		}
		off = hole
	}
	return out.Truncate(size)
}

// Snapshot implements driver.Runtime: a disk snapshot, attached read-only
// through the volume policy, archived, then dropped.
func (r *Runtime) Snapshot(ctx context.Context, id string, w io.Writer) error {
	owner := "snapshot." + id + "." + randomSuffix()
	unlock, err := r.disks.LockOwner(owner)
	if err != nil {
		return err
	}
	defer unlock()
	tmp := filepath.Join(r.disksDir(), "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return err
	}
	copyPath := filepath.Join(tmp, owner+".img")
	defer os.Remove(copyPath)
	if err := r.SnapshotDisk(ctx, id, copyPath); err != nil {
		return err
	}
	att, err := r.disks.Attach(ctx, owner, volume.Spec{Source: copyPath, Destination: rootDst, Kind: volume.KindImage, ReadOnly: true}, volume.AttachOptions{})
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	defer r.disks.DetachAll(context.Background(), owner)
	return tarutil.WriteDir(w, att.Mount.Source)
}

func randomSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
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
	info, err := r.engine.State(ctx, id)
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
