package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	securejoin "github.com/cyphar/filepath-securejoin"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/internal/tarutil"
	"github.com/berthrun/berth/runtime/driver"
	"github.com/berthrun/berth/volume"
)

// Root disks. On a backend with Capabilities.RootDisk (a driver.DiskMaker)
// the runtime owns every container's disk: the image file lives at
// <stateDir>/disks/<owner>/disk.img, is attached through the runtime's one
// volume manager under its one policy, and is detached and removed by the
// runtime (a failed create, Delete, recovery in New). The backend only
// fills new images and copies a container's disk consistently.

const diskFile = "disk.img"

// rootDst is where a root disk sits among its owner's attachments; no
// volume may take it (attachVolumes and AttachVolume refuse "/").
const rootDst = "/"

func (r *Runtime) disksDir() string              { return filepath.Join(r.stateDir, "disks") }
func (r *Runtime) diskDir(owner string) string   { return filepath.Join(r.disksDir(), owner) }
func (r *Runtime) diskImage(owner string) string { return filepath.Join(r.diskDir(owner), diskFile) }

// snapshotPrefix starts the owner of a snapshot's disk copy. A container
// ID cannot start with it (ValidateID refuses a leading dot), so recovery
// never mistakes a snapshot for a container, and never asks the backend
// about one.
const snapshotPrefix = ".snapshot."

func snapshotOwner(id string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return snapshotPrefix + id + "." + hex.EncodeToString(b)
}

// openDisks removes the disks a crash left behind, on a backend with root
// disks (New found its driver.DiskMaker).
func (r *Runtime) openDisks(ctx context.Context) error {
	if r.disks == nil {
		return nil
	}
	if err := os.MkdirAll(r.disksDir(), 0o700); err != nil {
		return err
	}
	return r.recoverDisks(ctx)
}

// recoverDisks removes the disks of containers that do not exist and of
// snapshots whose process ended: what a crashed create or snapshot left.
// A disk whose owner lock is held (a create or a snapshot in progress, in
// this process or another) stays; the lock is held while the container is
// looked up, so a create that finishes meanwhile keeps its disk.
func (r *Runtime) recoverDisks(ctx context.Context) error {
	ents, err := os.ReadDir(r.disksDir())
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		owner := e.Name()
		snapshot := strings.HasPrefix(owner, snapshotPrefix)
		if !e.IsDir() || (!snapshot && ValidateID(owner) != nil) {
			continue // not a disk of ours
		}
		unlock, err := r.volumes.TryLockOwner(owner)
		if err != nil {
			continue
		}
		if !snapshot {
			if _, err := r.d.State(ctx, owner); !errdefs.IsNotFound(err) {
				unlock()
				continue
			}
		}
		errs = append(errs, r.releaseVolumes(ctx, owner))
		unlock()
	}
	return errors.Join(errs...)
}

// releaseVolumes detaches everything owner holds (volumes, root disk) and
// then removes its disk: never while a loop device may still hold it.
// releaseWait bounds the wait for a deleted container's loop devices when
// the caller gave no deadline: past it, one still held (a descriptor a
// tenant parked elsewhere) goes with its holder, and the error names it.
const releaseWait = 10 * time.Second

func (r *Runtime) releaseVolumes(ctx context.Context, owner string) error {
	// A loop device something outside berth still holds (a descriptor a
	// tenant handed to another of its containers) goes with its holder:
	// the wait for it is bounded, then named in the error.
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, releaseWait)
		defer cancel()
	}
	if err := r.volumes.DetachAll(ctx, owner); err != nil {
		return err
	}
	if r.disks == nil {
		return nil
	}
	return os.RemoveAll(r.diskDir(owner))
}

// attachRootDisk makes the container's root disk (or adopts cfg.RootDisk)
// under the state directory, attaches it through the volume manager, and
// hands the backend the mounted path and the image. Create's undo
// (releaseVolumes) takes all of it back.
func (r *Runtime) attachRootDisk(ctx context.Context, req *driver.CreateRequest, cfg *Config, disk *os.File) error {
	id := req.ID
	if err := r.freshDiskDir(ctx, id); err != nil {
		return err
	}
	img := r.diskImage(id)
	var modes []driver.PathMode
	if cfg.RootDisk != "" {
		if err := adoptRootDisk(cfg.RootDisk, disk, img); err != nil {
			return err
		}
	} else {
		var err error
		if modes, err = r.makeRootDisk(ctx, req, cfg.DiskSize, img); err != nil {
			return err
		}
	}
	return r.mountRootDisk(ctx, req, img, modes)
}

// freshDiskDir makes the container's empty disk directory. Under the owner
// lock and with no container of this ID, a disk there is what a crashed
// create left: it is detached and removed first.
func (r *Runtime) freshDiskDir(ctx context.Context, id string) error {
	if _, err := os.Lstat(r.diskDir(id)); err == nil {
		if err := r.volumes.Detach(ctx, id, rootDst); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("root disk of a crashed create: %w", err)
		}
		if err := os.RemoveAll(r.diskDir(id)); err != nil {
			return err
		}
	}
	return os.Mkdir(r.diskDir(id), 0o700)
}

// adoptRootDisk moves the caller's disk at path (disk, when set, is it
// already open) to img.
func adoptRootDisk(path string, disk *os.File, img string) error {
	if disk == nil {
		f, err := openDiskFile(unix.AT_FDCWD, path)
		if err != nil {
			return err
		}
		defer f.Close()
		disk = f
	}
	return adoptDisk(disk, img)
}

// makeRootDisk has the backend make a disk of size bytes at img from the
// container's tree (the image's, or the spec's root); it returns the modes
// the backend's filesystem maker could not set.
func (r *Runtime) makeRootDisk(ctx context.Context, req *driver.CreateRequest, size int64, img string) ([]driver.PathMode, error) {
	var tree string
	switch {
	case req.ImageSource != nil:
		// The disk holds a copy: the shared tree is only read.
		t, err := req.ImageSource.Rootfs(ctx)
		if err != nil {
			return nil, err
		}
		tree = t
	case req.Image != "":
		return nil, fmt.Errorf("image %q: root disks are made from berth's image store (WithImageStore): %w", req.Image, errdefs.ErrNotImplemented)
	default:
		tree = req.Spec.Root.Path
	}
	made, err := r.disks.MakeDisk(ctx, img, size, tree)
	if err != nil {
		return nil, fmt.Errorf("root disk: %w", err)
	}
	if made != nil {
		return made.Modes, nil
	}
	return nil, nil
}

// mountRootDisk attaches the disk at img through the volume manager, sets
// modes under its mount, and makes the mount the spec's root.
func (r *Runtime) mountRootDisk(ctx context.Context, req *driver.CreateRequest, img string, modes []driver.PathMode) error {
	att, err := r.volumes.Attach(ctx, req.ID, volume.Spec{Source: img, Destination: rootDst, Kind: volume.KindImage}, volume.AttachOptions{})
	if err != nil {
		return fmt.Errorf("root disk: %w", err)
	}
	if att.Mount == nil {
		return fmt.Errorf("root disk: attached without a host mount: %w", errdefs.ErrInternal)
	}
	if err := setModes(att.Mount.Source, modes); err != nil {
		return fmt.Errorf("root disk: %w", err)
	}
	root := &specs.Root{Path: att.Mount.Source}
	if req.Spec.Root != nil {
		root.Readonly = req.Spec.Root.Readonly
	}
	req.Spec.Root = root
	req.RootDiskImage = img
	req.Image, req.ImageSource = "", nil
	return nil
}

// openDiskFile opens a disk image to adopt without following a link and
// without blocking on a FIFO, and checks that it is a regular file.
func openDiskFile(dirfd int, name string) (*os.File, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("root disk %s: %v: %w", name, err, errdefs.ErrInvalidArgument)
	}
	f := os.NewFile(uintptr(fd), name)
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("root disk %s is not a regular file: %w", name, errdefs.ErrInvalidArgument)
	}
	return f, nil
}

// adoptDisk puts the disk image open as src at dst: a hard link of that
// very file where it has no other link and both are on one filesystem
// (nothing else could write to it under the container), a sparse copy
// otherwise. The caller's file stays until the container exists (Create
// and Import remove it then), so a refused create loses nothing.
func adoptDisk(src *os.File, dst string) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &st); err != nil {
		return err
	}
	if st.Nlink == 1 {
		err := unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", src.Fd()), unix.AT_FDCWD, dst, unix.AT_SYMLINK_FOLLOW)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EXDEV) && !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.ENOENT) {
			return err
		}
	}
	return fsutil.CopySparseFrom(src, dst)
}

// setModes sets what the backend's filesystem maker could not (the sticky
// bit on xfs) under the freshly mounted disk at root: nothing has run on
// it yet, and no path leaves it.
func setModes(root string, modes []driver.PathMode) error {
	for _, m := range modes {
		p, err := securejoin.SecureJoin(root, m.Path)
		if err != nil {
			return err
		}
		mode := uint32(m.Mode.Perm())
		for bit, sys := range map[fs.FileMode]uint32{fs.ModeSticky: unix.S_ISVTX, fs.ModeSetgid: unix.S_ISGID, fs.ModeSetuid: unix.S_ISUID} {
			if m.Mode&bit != 0 {
				mode |= sys
			}
		}
		if err := unix.Fchmodat(unix.AT_FDCWD, p, mode, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chmod %s: %w", m.Path, err)
		}
	}
	return nil
}

// snapshotRootDisk archives a consistent copy of the container's root
// disk: the backend copies it (frozen), the runtime attaches the copy
// read-only through its volume manager and policy, archives it, and drops
// it. The copy belongs to an owner of its own, so recovery removes it if
// this process dies.
func (r *Runtime) snapshotRootDisk(ctx context.Context, id string, w io.Writer) (retErr error) {
	owner := snapshotOwner(id)
	unlock, err := r.volumes.LockOwner(owner)
	if err != nil {
		return err
	}
	defer unlock()
	if err := os.Mkdir(r.diskDir(owner), 0o700); err != nil {
		return err
	}
	defer func() { retErr = errors.Join(retErr, r.releaseVolumes(context.Background(), owner)) }()
	if err := r.copyRootDisk(ctx, id, r.diskImage(owner)); err != nil {
		return err
	}
	att, err := r.volumes.Attach(ctx, owner, volume.Spec{Source: r.diskImage(owner), Destination: rootDst, Kind: volume.KindImage, ReadOnly: true}, volume.AttachOptions{})
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return tarutil.WriteDir(w, att.Mount.Source)
}

// copyRootDisk has the backend copy the container's disk to dst while
// holding the container's owner lock: no delete or resize meanwhile.
func (r *Runtime) copyRootDisk(ctx context.Context, id, dst string) error {
	unlock, err := r.volumes.LockOwner(id)
	if err != nil {
		return err
	}
	defer unlock()
	return r.disks.SnapshotDisk(ctx, id, dst)
}

// volumesOnly drops the root disk from a list of attachments: it is the
// container's root filesystem, not one of its volumes.
func volumesOnly(specs []volume.Spec) []volume.Spec {
	return slices.DeleteFunc(specs, func(s volume.Spec) bool { return s.Destination == rootDst })
}

// ResizeDisk grows the container's root disk to size bytes; a running
// container sees the space at once (Capabilities.DiskResize).
func (c *Container) ResizeDisk(ctx context.Context, size int64) error {
	if err := c.capable("resize disk", c.r.resize != nil); err != nil {
		return err
	}
	if size <= 0 {
		return fmt.Errorf("container %q: disk size %d: %w", c.id, size, errdefs.ErrInvalidArgument)
	}
	if _, err := c.require(ctx, "resize the disk of", StatusCreated, StatusRunning, StatusPaused, StatusStopped); err != nil {
		return err
	}
	unlock, err := c.r.volumes.LockOwner(c.id)
	if err != nil {
		return wrap(c.id, err)
	}
	defer unlock()
	return wrap(c.id, c.r.resize.ResizeDisk(ctx, c.id, size))
}

// Snapshot writes an uncompressed tar archive of the container's root
// filesystem as it was at one instant; a running container is frozen only
// for as long as the backend needs (Capabilities.Snapshot).
func (c *Container) Snapshot(ctx context.Context, w io.Writer) error {
	// New bound what serves a claimed Snapshot: root disks or a
	// Snapshotter.
	if err := c.capable("snapshot", c.r.caps.Snapshot); err != nil {
		return err
	}
	if _, err := c.require(ctx, "snapshot", StatusCreated, StatusRunning, StatusPaused, StatusStopped); err != nil {
		return err
	}
	if c.r.disks != nil {
		return wrap(c.id, c.r.snapshotRootDisk(ctx, c.id, w))
	}
	return wrap(c.id, c.r.snapshot.Snapshot(ctx, c.id, w))
}
