package docker

import (
	"context"
	"io"

	"github.com/berthrun/berth/runtime/driver"
)

// Volumes reach a Docker container as bind mounts in the spec (see
// bindMount). Raw block devices and attaching to a running container are
// not implemented yet: Capabilities.RawBlock and HotAttach are false.

// unsupportedRequest refuses what the backend does not do yet: raw block
// devices (to come, on a userns-remap daemon only) and root disks of their
// own (Docker's storage driver owns the root filesystem).
func unsupportedRequest(req *driver.CreateRequest) error {
	switch {
	case len(req.Devices) > 0:
		return notImplemented("raw block devices: not implemented by the Docker backend yet")
	case req.DiskSize != 0 || req.RootDisk != "":
		return notImplemented("root disks: Docker's storage driver holds the root filesystem")
	}
	return nil
}

// AttachVolume implements driver.Runtime: not implemented (HotAttach).
func (r *Runtime) AttachVolume(ctx context.Context, id string, a *driver.Attachment) error {
	return notImplemented("attaching a volume to a running Docker container")
}

// DetachVolume implements driver.Runtime: not implemented (HotAttach).
func (r *Runtime) DetachVolume(ctx context.Context, id string, dst string) error {
	return notImplemented("detaching a volume from a running Docker container")
}

// ResizeDisk implements driver.Runtime: not implemented (DiskResize).
func (r *Runtime) ResizeDisk(ctx context.Context, id string, size int64) error {
	return notImplemented("resizing a Docker container's root filesystem")
}

// Snapshot implements driver.Runtime: not implemented (Snapshot). Docker's
// export is not consistent while the container runs.
func (r *Runtime) Snapshot(ctx context.Context, id string, w io.Writer) error {
	return notImplemented("snapshot of a Docker container's root filesystem")
}
