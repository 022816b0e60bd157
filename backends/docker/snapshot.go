package docker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/internal/tarutil"
)

// Snapshot implements driver.Snapshotter (Capabilities.Snapshot): the
// container's root filesystem as Docker exports it (its image's layers and
// its writable layer, flattened; volumes, and the /etc/hosts, hostname and
// resolv.conf Docker binds over it, are not part of it), at one instant. A
// running container is paused (Docker's freezer) while the daemon writes
// the export into a temporary file, and resumed before the archive is
// copied to w: the freeze lasts as long as the daemon's tar, never as long
// as w takes. A container already paused stays paused; one created or
// stopped has nothing running. On a userns-remap daemon the export carries
// the owners as the container sees them; a container there in the host's
// user namespace is archived by berth from its overlay2 layers, mounted
// read-only (the daemon's export leaves out the files of the host's root).
//
// Docker's export, not its commit: a commit makes an image (the daemon's
// layers, and its tags at risk) only for berth to flatten it again, while
// the export of a frozen container is the same tree in one step, and leaves
// nothing in the daemon. A Pause or Resume the caller makes meanwhile acts
// on the same freezer: the snapshot is consistent only if none comes.
func (r *Runtime) Snapshot(ctx context.Context, id string, w io.Writer) error {
	c, err := r.inspect(ctx, id)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp("", "berth-docker-snapshot-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	// The tenant's sparse files come as their zeros: the temporary file
	// keeps them as holes, never on the host's disk.
	sparse := &holeWriter{f: tmp}
	write := func() error {
		rc, err := r.eng.ContainerExport(ctx, c.ID, client.ContainerExportOptions{})
		if err != nil {
			return fmt.Errorf("export: %w", classify(err))
		}
		defer rc.Close()
		if _, err := io.Copy(sparse, rc); err != nil {
			return fmt.Errorf("export: %w", classify(err))
		}
		return nil
	}
	if r.remap != nil {
		rec, err := readRecord(c.Config.Labels)
		if err != nil {
			return fmt.Errorf("%w: %w", err, errdefs.ErrDataLoss)
		}
		if rec.Spec.Linux == nil || len(rec.Spec.Linux.UIDMappings) == 0 {
			// In the host's user namespace on a userns-remap daemon: the
			// files the container's root wrote belong to the host's root,
			// which the daemon's export cannot map and silently leaves
			// out. Berth archives the container's layers itself.
			var unmount func()
			if write, unmount, err = r.layersArchiver(c, sparse); err != nil {
				return err
			}
			defer unmount()
		}
	}
	if err := r.whileFrozen(ctx, c, write); err != nil {
		return err
	}
	if err := sparse.finish(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.Copy(w, tmp); err != nil {
		return fmt.Errorf("snapshot: %w: %w", err, errdefs.ErrUnknown)
	}
	return nil
}

// layersArchiver mounts the container's overlay2 layers (its writable
// layer over its image's) read-only, on this host, and returns what writes
// their tree, as the container sees it, to w.
func (r *Runtime) layersArchiver(c *container.InspectResponse, w io.Writer) (write func() error, unmount func(), err error) {
	gd := c.GraphDriver
	if !r.local || gd == nil || gd.Name != "overlay2" || gd.Data["UpperDir"] == "" || gd.Data["LowerDir"] == "" {
		return nil, nil, notImplemented("snapshot of a container in the host's user namespace on a userns-remap daemon: needs the daemon on this host with overlay2")
	}
	dir, err := os.MkdirTemp("", "berth-docker-layers-")
	if err != nil {
		return nil, nil, err
	}
	// Lower layers only: the mount writes nothing, and sees the writable
	// layer as it stands (frozen while the container runs).
	opts := "lowerdir=" + gd.Data["UpperDir"] + ":" + gd.Data["LowerDir"]
	if err := unix.Mount("overlay", dir, "overlay", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		os.Remove(dir)
		return nil, nil, fmt.Errorf("mount the container's layers: %w: %w", err, errdefs.ErrNotImplemented)
	}
	unmount = func() {
		_ = fsutil.Unmount(dir)
		_ = os.Remove(dir)
	}
	return func() error { return tarutil.WriteDir(w, dir) }, unmount, nil
}

// whileFrozen runs write with the container frozen if it runs, and thaws
// it after.
func (r *Runtime) whileFrozen(ctx context.Context, c *container.InspectResponse, write func() error) error {
	if c.State == nil || !c.State.Running || c.State.Paused {
		return write()
	}
	if _, err := r.eng.ContainerPause(ctx, c.ID, client.ContainerPauseOptions{}); err != nil {
		return fmt.Errorf("freeze: %w", classify(err))
	}
	err := write()
	if _, uerr := r.eng.ContainerUnpause(context.WithoutCancel(ctx), c.ID, client.ContainerUnpauseOptions{}); uerr != nil && err == nil {
		err = fmt.Errorf("thaw: %w", classify(uerr))
	}
	return err
}

// holeBlock is the unit holeWriter leaves as a hole when it is all zeros.
const holeBlock = 64 << 10

var zeroBlock [holeBlock]byte

// holeWriter writes a stream into f from its start, leaving a hole for
// every aligned block of zeros: a container's sparse file (truncate -s 1T)
// is that many zeros in an archive, which would otherwise take as much of
// the host's disk. finish gives f the stream's length.
type holeWriter struct {
	f   *os.File
	off int64
}

func (h *holeWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		chunk := p[:min(int64(len(p)), holeBlock-h.off%holeBlock)]
		if !bytes.Equal(chunk, zeroBlock[:len(chunk)]) {
			w, err := h.f.WriteAt(chunk, h.off)
			n += w
			h.off += int64(w)
			if err != nil {
				return n, err
			}
		} else {
			n += len(chunk)
			h.off += int64(len(chunk))
		}
		p = p[len(chunk):]
	}
	return n, nil
}

// finish sets f's size to what was written (the stream may end in a hole).
func (h *holeWriter) finish() error { return h.f.Truncate(h.off) }
