package volume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/loop"
)

// openSource gives the device to probe, check and mount for the opened
// source src: a read-write block device itself, an image file (or a
// read-only block device) on an autoclear loop device, read-only for a
// read-only volume: a read-only mount still writes (ext4 cleans up its
// orphan list, superblock fields change), and only a device the kernel
// cannot write keeps the volume's bytes as they were. Closing the returned
// file releases the loop unless a mount holds it.
func openSource(sp Spec, src *os.File) (dev *os.File, path string, err error) {
	if sp.Kind == KindBlock && !sp.ReadOnly {
		fd, err := unix.Dup(int(src.Fd()))
		if err != nil {
			return nil, "", err
		}
		unix.CloseOnExec(fd)
		return os.NewFile(uintptr(fd), sp.Source), sp.Source, nil
	}
	ld, err := loop.Attach(src, loop.Options{ReadOnly: sp.ReadOnly, Autoclear: true})
	if err != nil {
		return nil, "", err
	}
	hook("loop-attached")
	return ld.File, ld.Path, nil
}

func deviceSize(f *os.File) (int64, error) {
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	_, err = f.Seek(0, io.SeekStart)
	return n, err
}

// hostMount probes, checks and mounts a block or image source at mp. The
// device that is probed is the one mounted (the loop device holding the
// open image, or the block device), with the probed type named: the kernel
// never guesses. When it fails, an image's loop device is free before it
// returns (within ctx).
func (m *Manager) hostMount(ctx context.Context, sp Spec, mp string, src *os.File) (fs Filesystem, err error) {
	dev, path, err := openSource(sp, src)
	if err != nil {
		return Filesystem{}, err
	}
	var backingDev, backingIno uint64
	if sp.Kind == KindImage {
		info, err := unix.IoctlLoopGetStatus64(int(dev.Fd()))
		if err != nil {
			dev.Close()
			return Filesystem{}, fmt.Errorf("LOOP_GET_STATUS64 %s: %w", path, err)
		}
		backingDev, backingIno = info.Device, info.Inode
	}
	defer func() {
		dev.Close()
		if err != nil && sp.Kind == KindImage {
			err = errors.Join(err, releaseLoop(ctx, path, backingDev, backingIno, sp.Source))
		}
	}()
	if fs, err = m.checkDevice(ctx, dev, path); err != nil {
		return fs, err
	}
	if err := os.Mkdir(mp, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fs, err
	}
	flags, data := m.mountOptions(fs, sp.ReadOnly)
	hook("mount")
	if err := unix.Mount(path, mp, fs.Driver, flags, data); err != nil {
		_ = os.Remove(mp)
		return fs, fmt.Errorf("mount %s (%s) at %s: %v: %w", sp.Source, fs.Type, mp, err, errdefs.ErrInvalidArgument)
	}
	hook("mounted")
	return fs, nil
}

// checkDevice probes the filesystem on dev (at path) and puts it through
// the policy and, when the policy asks, fsck.
func (m *Manager) checkDevice(ctx context.Context, dev *os.File, path string) (Filesystem, error) {
	size, err := deviceSize(dev)
	if err != nil {
		return Filesystem{}, err
	}
	fs, err := Probe(dev, size)
	if err != nil {
		return Filesystem{}, err
	}
	if err := m.policy.Check(fs); err != nil {
		return fs, err
	}
	if m.policy.Fsck {
		if err := Fsck(ctx, path, fs); err != nil {
			return fs, err
		}
	}
	return fs, nil
}

// mountOptions returns the mount flags and data for fs: never setuid or
// devices, no exec when the policy says so, and read-only without any
// write (no journal replay).
func (m *Manager) mountOptions(fs Filesystem, readOnly bool) (uintptr, string) {
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	if m.policy.NoExec {
		flags |= unix.MS_NOEXEC
	}
	var data []string
	switch fs.Driver {
	case "xfs":
		// Copies of one filesystem (snapshots) share a UUID; xfs would
		// refuse all but the first.
		data = append(data, "nouuid")
	case "ext4":
		// The superblock may ask the kernel to panic on the first error
		// it finds (tune2fs -e panic), and the tenant can make one.
		data = append(data, "errors=remount-ro")
	}
	if readOnly {
		flags |= unix.MS_RDONLY
		// Read-only must mean no write at all: no journal replay.
		switch fs.Driver {
		case "ext4":
			data = append(data, "noload")
		case "xfs":
			data = append(data, "norecovery")
		}
	}
	return flags, strings.Join(data, ",")
}

// unmountDir unmounts mp if it is a mount point and removes it. With the
// mount gone, an autoclear loop device under it frees itself.
//
// Each mount is made private, with everything under it, before it goes:
// an unmount propagates to the peers and slaves of the parent of each
// mount it takes, so detaching a copy of a shared source
// (PropagationShared) with what is mounted under it would unmount the
// host's own mounts under the source too.
func unmountDir(mp string) error {
	for {
		if err := privatize(mp); err != nil {
			return err
		}
		// Still used (a container's view), a mount is detached from the
		// host now; the kernel frees it with the last user.
		err := unix.Unmount(mp, unix.UMOUNT_NOFOLLOW)
		if errors.Is(err, unix.EBUSY) {
			err = unix.Unmount(mp, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break // nothing (more) mounted there
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", mp, err)
		}
		// Another mount may lie underneath.
	}
	if err := os.Remove(mp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// privatize makes the mount at mp (the topmost), and every mount under
// it, private. mp is opened without following a link; nothing mounted
// there is no error.
func privatize(mp string) error {
	fd, err := unix.Open(mp, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", mp, err)
	}
	defer unix.Close(fd)
	err = unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &unix.MountAttr{Propagation: unix.MS_PRIVATE})
	if err != nil && !errors.Is(err, unix.EINVAL) { // EINVAL: not a mount point
		return fmt.Errorf("make %s private: %w", mp, err)
	}
	return nil
}
