package libcontainer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/runc/libcontainer/configs"

	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/internal/idmap"
	"github.com/berthrun/berth/internal/phase"
	"github.com/berthrun/berth/runtime/driver"
)

// Create implements driver.Runtime.
func (r *Runtime) Create(ctx context.Context, req *driver.CreateRequest) (retErr error) {
	sp := phase.Begin(ctx)
	if err := checkCreate(req); err != nil {
		return err
	}
	if err := checkHostTasks(); err != nil {
		return err
	}
	// Opened first, checked, and held until the init has joined them.
	joins, err := r.openJoins(req)
	if err != nil {
		return err
	}
	defer joins.close()
	dir := r.dir(req.ID)
	if err := os.Mkdir(dir, 0o711); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("container exists: %w", errdefs.ErrAlreadyExists)
		}
		return err
	}
	rec := &record{ID: req.ID, CreatedAt: time.Now().UTC(), Labels: req.Labels, Spec: req.Spec, Rootfs: req.Spec.Root.Path, CRILog: req.CRILog, OpenStdin: req.OpenStdin}
	if req.Spec.Linux == nil || req.Spec.Linux.CgroupsPath == "" {
		// A cgroup of berth's making, the container's alone (a
		// privileged spec naming its own may name anything, even the
		// root: that one is never removed without libcontainer).
		rec.CgroupsPath = cgroupsPathOf(req.ID, r.cgroupParent, req.Spec)
	}
	defer func() {
		if retErr != nil {
			_ = r.cleanup(req.ID, rec)
		}
	}()
	userns := driver.HasUserNamespace(req.Spec)
	if err := r.planRootfs(ctx, req, rec, userns); err != nil {
		return err
	}
	sp.Mark("create.dir")
	// The record goes down before anything is mounted or spawned, so that a
	// crash at any later point leaves something Delete can clean up.
	if err := fsutil.WriteJSON(r.recordPath(req.ID), rec); err != nil {
		return err
	}
	sp.Mark("create.record")
	if err := mountRootfs(dir, req, rec, userns); err != nil {
		return err
	}
	cfg, err := nativeConfig(req.ID, r.cgroupParent, joinedSpec(withDevices(req.Spec, req.Devices), joins), rec.Rootfs)
	if err != nil {
		return err
	}
	sp.Mark("create.config")
	if err := r.startInitOf(ctx, req, cfg, rec); err != nil {
		return err
	}
	sp.Skip()
	if err := r.recordCreatedVolumes(ctx, req); err != nil {
		return err
	}
	sp.Mark("create.volume-mounts")
	// The record is written for good (this create is its only writer):
	// the next read of it, the start's, need not parse it again. What is
	// kept reads as the file would (no labels: none, not an empty map).
	kept := *rec
	if len(kept.Labels) == 0 {
		kept.Labels = nil
	}
	r.records.put(r.recordPath(req.ID), &kept)
	return nil
}

// checkCreate refuses the requests this engine cannot serve before anything
// is made.
func checkCreate(req *driver.CreateRequest) error {
	if cs := req.Spec.Process.ConsoleSize; cs != nil {
		if _, _, err := boxSize(*cs); err != nil {
			return err
		}
	}
	if req.Image != "" && req.ImageSource == nil {
		return fmt.Errorf("image %q: this engine takes images from berth's image store (runtime.WithImageStore): %w", req.Image, errdefs.ErrNotImplemented)
	}
	if req.Spec.Linux.Seccomp != nil && !driver.UnfilteredSeccomp(req.Spec.Linux.Seccomp) && !seccompBuilt {
		return fmt.Errorf("seccomp: this program was built without seccomp support and cannot confine the container; build it with -tags seccomp (cgo and libseccomp-dev): %w", errdefs.ErrFailedPrecondition)
	}
	return nil
}

// planRootfs decides in rec where the container's root filesystem will be:
// an overlay over the image's unpacked tree, an ID-mapped bind of the
// spec's root for a user-namespaced container, or the spec's root itself.
func (r *Runtime) planRootfs(ctx context.Context, req *driver.CreateRequest, rec *record, userns bool) error {
	if userns {
		if err := traversable(r.root); err != nil {
			return err
		}
	}
	dir := r.dir(req.ID)
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
	return nil
}

// mountRootfs mounts the root filesystem planRootfs chose, if it is not the
// spec's root itself.
func mountRootfs(dir string, req *driver.CreateRequest, rec *record, userns bool) error {
	if rec.ImageTree != "" {
		return mountImageRootfs(dir, rec.ImageTree, req.Spec.Linux.UIDMappings, req.Spec.Linux.GIDMappings)
	}
	if userns {
		if err := os.Mkdir(rec.Rootfs, 0o755); err != nil {
			return err
		}
		if err := idmap.BindMount(req.Spec.Root.Path, rec.Rootfs, req.Spec.Linux.UIDMappings, req.Spec.Linux.GIDMappings); err != nil {
			return fmt.Errorf("ID-mapped root filesystem: %v: %w", err, errdefs.ErrNotImplemented)
		}
	}
	return nil
}

// startInitOf creates the container's init, in this process when the
// runtime is Attached, else under a supervisor whose number goes in the
// record,
// and records the init's namespaces.
func (r *Runtime) startInitOf(ctx context.Context, req *driver.CreateRequest, cfg *configs.Config, rec *record) error {
	out := outputSpec{limits: logLimits(req.Log), criLog: req.CRILog, openStdin: req.OpenStdin, stdinOnce: req.StdinOnce, phases: phase.FromContext(ctx)}
	sp := phase.Begin(ctx)
	// One writer for both streams; none is not one.
	out.same = req.IO.Stdout == req.IO.Stderr && nilIfNil(req.IO.Stdout) != nil
	var init monitorStatus
	if r.attached {
		st, err := r.startAttached(req.ID, cfg, req.Spec.Process, req.IO, out)
		if err != nil {
			return err
		}
		init = st
	} else {
		n, st, err := r.superviseInit(ctx, req.ID, cfg, req.Spec.Process, req.IO, out)
		if err != nil {
			return err
		}
		init = st
		rec.Supervisor = n + 1
		if err := fsutil.WriteJSON(r.recordPath(req.ID), rec); err != nil {
			return err
		}
	}
	sp.Mark("create.init")
	if err := r.recordNamespaces(req.ID, init.Pid, init.Start); err != nil {
		return err
	}
	sp.Mark("create.namespaces")
	return nil
}

// recordCreatedVolumes records the volumes' mounts of a created container.
// The init waits on its exec FIFO: the mount table is still berth's alone,
// and the volumes' mounts are known by their IDs from here on.
func (r *Runtime) recordCreatedVolumes(ctx context.Context, req *driver.CreateRequest) error {
	if len(req.Devices) == 0 && !slices.ContainsFunc(req.Spec.Mounts, isBind) {
		return nil // none: no record (readMounts takes none for empty)
	}
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
