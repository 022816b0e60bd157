package libcontainer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/internal/idmap"
	"github.com/berthrun/berth/internal/mountns"
)

// A container from an image runs on an overlay: the image's unpacked tree,
// shared by every container of the image and never written, under a
// writable layer of its own in containers/<id>/rw. No copy is made.
//
// In a user namespace both layers are ID-mapped bind mounts (containers/
// <id>/lower and rwmap) and the overlay is mounted with the container
// root's filesystem IDs, which overlayfs keeps for the writes it makes on
// the container's behalf (the overlay mount itself cannot be ID-mapped).
// Files then land on disk with the IDs the container sees, as they would
// without a user namespace.

func overlayOptions(lower, upper, work string) (string, error) {
	for _, p := range []string{lower, upper, work} {
		if strings.ContainsAny(p, ",:\\\\") {
			return "", fmt.Errorf("overlay layer path %q holds a comma, colon or backslash: %w", p, errdefs.ErrInvalidArgument)
		}
	}
	return "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work, nil
}

// mountImageRootfs makes dir/rootfs the overlay of lower under dir/rw.
func mountImageRootfs(dir, lower string, uidMap, gidMap []specs.LinuxIDMapping) error {
	rw := filepath.Join(dir, "rw")
	for _, d := range []string{filepath.Join(rw, "upper"), filepath.Join(rw, "work"), filepath.Join(dir, "rootfs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if len(uidMap) == 0 {
		opts, err := overlayOptions(lower, filepath.Join(rw, "upper"), filepath.Join(rw, "work"))
		if err != nil {
			return err
		}
		return mountOverlay(filepath.Join(dir, "rootfs"), opts)
	}
	mappedLower, mappedRW := filepath.Join(dir, "lower"), filepath.Join(dir, "rwmap")
	for _, m := range [][2]string{{lower, mappedLower}, {rw, mappedRW}} {
		if err := os.MkdirAll(m[1], 0o755); err != nil {
			return err
		}
		if err := idmap.BindMount(m[0], m[1], uidMap, gidMap); err != nil {
			return fmt.Errorf("ID-mapped layer %s: %v: %w", m[0], err, errdefs.ErrNotImplemented)
		}
	}
	opts, err := overlayOptions(mappedLower, filepath.Join(mappedRW, "upper"), filepath.Join(mappedRW, "work"))
	if err != nil {
		return err
	}
	uid, gid := int(uidMap[0].HostID), int(gidMap[0].HostID)
	return mountns.OnThrowawayThread(func() error {
		// overlayfs acts on the upper layer with its mounter's
		// credentials: the container's root, with the capabilities that
		// setfsuid dropped from this thread given back.
		unix.Setfsgid(gid)
		unix.Setfsuid(uid)
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var caps [2]unix.CapUserData
		if err := unix.Capget(&hdr, &caps[0]); err != nil {
			return err
		}
		caps[0].Effective, caps[1].Effective = caps[0].Permitted, caps[1].Permitted
		if err := unix.Capset(&hdr, &caps[0]); err != nil {
			return err
		}
		return mountOverlay(filepath.Join(dir, "rootfs"), opts)
	})
}

func mountOverlay(target, opts string) error {
	if err := unix.Mount("overlay", target, "overlay", 0, opts); err != nil {
		return fmt.Errorf("overlay at %s: %w", target, err)
	}
	return nil
}

// unmountImageRootfs undoes mountImageRootfs, tolerating what is missing.
func unmountImageRootfs(dir string) error {
	var errs []error
	for _, p := range []string{"rootfs", "lower", "rwmap"} {
		errs = append(errs, fsutil.Unmount(filepath.Join(dir, p)))
	}
	return errors.Join(errs...)
}

// snapshotOverlayView mounts, read-only at target, the container's tree as
// it sees it, with the IDs it sees: its writable layer over the image's,
// without ID mapping. Unmount it with fsutil.Unmount.
func snapshotOverlayView(dir, lower, target string) error {
	upper := filepath.Join(dir, "rw", "upper")
	for _, p := range []string{lower, upper} {
		if strings.ContainsAny(p, ",:\\\\") {
			return fmt.Errorf("overlay layer path %q holds a comma, colon or backslash: %w", p, errdefs.ErrInvalidArgument)
		}
	}
	return unix.Mount("overlay", target, "overlay", unix.MS_RDONLY, "lowerdir="+upper+":"+lower)
}
