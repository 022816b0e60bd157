package libcontainer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"

	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/internal/idmap"
	"github.com/berthrun/berth/runtime/driver"
)

// Create implements driver.Runtime.
func (r *Runtime) Create(ctx context.Context, req *driver.CreateRequest) (retErr error) {
	if req.Image != "" && req.ImageSource == nil {
		return fmt.Errorf("image %q: this engine takes images from berth's image store (runtime.WithImageStore): %w", req.Image, errdefs.ErrNotImplemented)
	}
	if req.Spec.Linux.Seccomp != nil && !seccompBuilt {
		return fmt.Errorf("seccomp: this program was built without seccomp support and cannot confine the container; build it with -tags seccomp (cgo and libseccomp-dev): %w", errdefs.ErrFailedPrecondition)
	}
	dir := r.dir(req.ID)
	if err := os.Mkdir(dir, 0o711); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("container exists: %w", errdefs.ErrAlreadyExists)
		}
		return err
	}
	rec := &record{ID: req.ID, CreatedAt: time.Now().UTC(), Labels: req.Labels, Spec: req.Spec, Rootfs: req.Spec.Root.Path}
	defer func() {
		if retErr != nil {
			_ = r.cleanup(req.ID, rec)
		}
	}()
	userns := driver.HasUserNamespace(req.Spec)
	if userns {
		if err := traversable(r.root); err != nil {
			return err
		}
	}
	if req.ImageSource != nil {
		tree, err := req.ImageSource.Rootfs(ctx)
		if err != nil {
			return err
		}
		rec.Rootfs, rec.ImageTree = filepath.Join(dir, "rootfs"), tree
	} else if userns {
		rec.Rootfs = filepath.Join(dir, "rootfs")
		rec.IDMapped = true
	}
	// The record goes down before anything is mounted or spawned, so that a
	// crash at any later point leaves something Delete can clean up.
	if err := fsutil.WriteJSON(r.recordPath(req.ID), rec); err != nil {
		return err
	}
	if rec.ImageTree != "" {
		if err := mountImageRootfs(dir, rec.ImageTree, req.Spec.Linux.UIDMappings, req.Spec.Linux.GIDMappings); err != nil {
			return err
		}
	} else if userns {
		if err := os.Mkdir(rec.Rootfs, 0o755); err != nil {
			return err
		}
		if err := idmap.BindMount(req.Spec.Root.Path, rec.Rootfs, req.Spec.Linux.UIDMappings, req.Spec.Linux.GIDMappings); err != nil {
			return fmt.Errorf("ID-mapped root filesystem: %v: %w", err, errdefs.ErrNotImplemented)
		}
	}
	cfg, err := nativeConfig(req.ID, r.cgroupParent, withDevices(req.Spec, req.Devices), rec.Rootfs)
	if err != nil {
		return err
	}
	if r.attached {
		if err := r.startAttached(req.ID, cfg, req.Spec.Process, req.IO, logLimits(req.Log)); err != nil {
			return err
		}
	} else {
		pid, err := r.spawnMonitor(ctx, req.ID, cfg, req.Spec.Process, req.IO, logLimits(req.Log))
		if err != nil {
			return err
		}
		rec.MonitorPid = pid
		if err := fsutil.WriteJSON(r.recordPath(req.ID), rec); err != nil {
			return err
		}
	}
	// The init waits on its exec FIFO: the mount table is still berth's
	// alone, and the volumes' mounts are known by their IDs from here on.
	c, err := r.load(req.ID)
	if err != nil {
		return err
	}
	st, err := c.State()
	if err != nil {
		return classify(err)
	}
	uid, gid := 0, 0
	if m := req.Spec.Linux.UIDMappings; len(m) > 0 {
		uid, gid = int(m[0].HostID), int(req.Spec.Linux.GIDMappings[0].HostID)
	}
	return r.recordVolumeMounts(ctx, req.ID, st.InitProcessPid, uid, gid, req.Spec, req.Devices)
}
