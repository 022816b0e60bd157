package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/phase"
	"github.com/berthrun/berth/runtime/driver"
)

// Create makes a container from cfg without starting its process.
func (r *Runtime) Create(ctx context.Context, id string, cfg *Config) (*Container, error) {
	if cfg == nil || cfg.RootDisk == "" || !filepath.IsAbs(cfg.RootDisk) {
		return r.create(ctx, id, cfg, nil)
	}
	// The disk to adopt is opened once: the container gets that file, and
	// only its name is dropped after (it moved), never a file swapped in.
	dfd, err := unix.Open(filepath.Dir(cfg.RootDisk), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return r.create(ctx, id, cfg, nil) // which names the path's fault
	}
	defer unix.Close(dfd)
	disk, err := openDiskFile(dfd, filepath.Base(cfg.RootDisk))
	if err != nil {
		return r.create(ctx, id, cfg, nil)
	}
	defer disk.Close()
	c, err := r.create(ctx, id, cfg, disk)
	if err == nil {
		dropAdopted(dfd, filepath.Base(cfg.RootDisk), disk)
	}
	return c, err
}

// create is Create; disk, when set, is cfg.RootDisk already open (Import).
func (r *Runtime) create(ctx context.Context, id string, cfg *Config, disk *os.File) (*Container, error) {
	sp := phase.Begin(ctx)
	if err := r.checkCreate(id, cfg); err != nil {
		return nil, err
	}
	sp.Mark("create.check")
	// The owner lock is held from here until the container exists: two
	// creates of one ID take turns, and recovery in another process never
	// takes this create's ID block or volumes for a crash's leftovers.
	unlock, err := r.volumes.LockOwner(id)
	if err != nil {
		return nil, wrap(id, err)
	}
	defer unlock()
	sp.Mark("create.lock")
	if _, err := r.d.State(ctx, id); err == nil {
		return nil, fmt.Errorf("container %q: %w", id, errdefs.ErrAlreadyExists)
	} else if !errdefs.IsNotFound(err) {
		return nil, wrap(id, err)
	}
	sp.Mark("create.exists")
	spec, err := cloneSpec(cfg.Spec)
	if err != nil {
		return nil, wrap(id, err)
	}
	addJoined(spec, cfg.Join)
	if err := r.confine(id, spec); err != nil {
		return nil, err
	}
	if err := checkVolumeSecurity(id, cfg.Volumes, r.security); err != nil {
		return nil, err
	}
	var targets map[string]*Info
	if len(cfg.Join) > 0 {
		if targets, err = r.holdJoins(ctx, id, cfg.Join); err != nil {
			return nil, wrap(id, err)
		}
	}
	var rng IDRange
	if cfg.UserNamespace {
		rng, err = r.userNamespace(ctx, id, spec)
	} else if x, ok := cfg.Join[specs.UserNamespace]; ok {
		rng, err = r.joinUserNamespace(id, spec, x, targets[x])
	}
	if err != nil {
		r.undoCreate(ctx, id, rng)
		return nil, wrap(id, err)
	}
	sp.Mark("create.spec")
	req := &driver.CreateRequest{ID: id, Spec: spec, Image: cfg.Image, Labels: cfg.Labels, IO: cfg.IO, OpenStdin: cfg.OpenStdin, StdinOnce: cfg.StdinOnce, Log: logLimits(cfg.Log), CRILog: cfg.CRILog, Join: cloneJoin(cfg.Join)}
	err = r.events.act(id, EventCreated, func() error { return r.createWith(ctx, req, cfg, disk, rng) })
	if err != nil {
		// The ID was free under the lock: whatever this call holds is
		// its own, even when the engine says already-exists.
		r.undoCreate(ctx, id, rng)
		return nil, wrap(id, err)
	}
	return &Container{r: r, id: id}, nil
}

// checkCreate refuses, before anything is taken, a create the config or
// the backend rules out.
func (r *Runtime) checkCreate(id string, cfg *Config) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	if err := validateConfig(id, cfg); err != nil {
		return err
	}
	if cfg.RootDisk != "" && !r.caps.RootDisk {
		return fmt.Errorf("container %q: root disk: the backend has no root disks: %w", id, errdefs.ErrNotImplemented)
	}
	if cfg.Image == "" && cfg.RootDisk == "" {
		if fi, err := os.Stat(cfg.Spec.Root.Path); err != nil || !fi.IsDir() {
			return fmt.Errorf("container %q: root filesystem %q is not a directory: %w", id, cfg.Spec.Root.Path, errdefs.ErrInvalidArgument)
		}
	}
	if cfg.DiskSize != 0 && !r.caps.RootDisk {
		return fmt.Errorf("container %q: disk size: the backend has no root disks: %w", id, errdefs.ErrNotImplemented)
	}
	if cfg.DiskSize < 0 {
		return fmt.Errorf("container %q: disk size %d: %w", id, cfg.DiskSize, errdefs.ErrInvalidArgument)
	}
	if cfg.UserNamespace && !r.caps.UserNamespace {
		return fmt.Errorf("container %q: user namespaces: %w", id, errdefs.ErrNotImplemented)
	}
	if cfg.CRILog != "" {
		if !r.caps.CRILog {
			return fmt.Errorf("container %q: CRI log: the backend writes no CRI log files: %w", id, errdefs.ErrNotImplemented)
		}
		if fi, err := os.Stat(filepath.Dir(cfg.CRILog)); err != nil || !fi.IsDir() {
			return fmt.Errorf("container %q: CRI log %s: its directory does not exist: %w", id, cfg.CRILog, errdefs.ErrInvalidArgument)
		}
	}
	if cfg.Spec.Process.Terminal && !r.caps.Terminal {
		return fmt.Errorf("container %q: terminal: %w", id, errdefs.ErrNotImplemented)
	}
	if cfg.OpenStdin && !r.caps.Attach {
		return fmt.Errorf("container %q: standard input open for attachments: %w", id, errdefs.ErrNotImplemented)
	}
	if len(cfg.ImageMounts) > 0 && r.images == nil {
		return fmt.Errorf("container %q: image mounts: the runtime has no image store: %w", id, errdefs.ErrFailedPrecondition)
	}
	if len(cfg.Join) > 0 && !r.caps.JoinNamespaces {
		return fmt.Errorf("container %q: joining another container's namespaces: %w", id, errdefs.ErrNotImplemented)
	}
	return nil
}

// userNamespace adds a user namespace to spec and returns the block of
// host IDs allocated to the container (none when the engine has one
// mapping for all).
func (r *Runtime) userNamespace(ctx context.Context, id string, spec *specs.Spec) (IDRange, error) {
	spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
	// An engine with one mapping for all (Docker's userns-remap)
	// fills it in itself; the others get a block of their own.
	if r.caps.UserNamespaceShared {
		return IDRange{}, nil
	}
	rng, err := r.ids.allocate(id, r.ownerLive(ctx))
	if err != nil {
		return IDRange{}, err
	}
	m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: rng.HostID, Size: rng.Size}}
	spec.Linux.UIDMappings = m
	spec.Linux.GIDMappings = m
	return rng, nil
}

// createWith gives req the container's image, root disk and volumes, then
// has the backend create it.
func (r *Runtime) createWith(ctx context.Context, req *driver.CreateRequest, cfg *Config, disk *os.File, rng IDRange) error {
	if cfg.Image != "" {
		src, err := r.resolveImage(ctx, req.ID, cfg.Image, req.Spec, cfg.KeepProcess)
		if err != nil {
			return err
		}
		req.ImageSource = src
	}
	if r.disks != nil {
		if err := r.attachRootDisk(ctx, req, cfg, disk); err != nil {
			return err
		}
	}
	if err := r.mountImages(ctx, req.ID, req.Spec, cfg.ImageMounts); err != nil {
		return err
	}
	sp := phase.Begin(ctx)
	if err := r.attachVolumes(ctx, req, cfg.Volumes, rng); err != nil {
		return err
	}
	sp.Mark("create.volumes")
	if err := r.d.Create(ctx, req); err != nil {
		return err
	}
	sp.Skip()
	r.releaseHostBinds(req.ID)
	sp.Mark("create.release-binds")
	return nil
}

// undoCreate releases what a failed create of id took: its volumes, its
// image hold, its hold on an ID block and its joins.
func (r *Runtime) undoCreate(ctx context.Context, id string, rng IDRange) {
	_ = r.releaseVolumes(ctx, id)
	_ = r.releaseImage(ctx, id)
	if rng.Size > 0 {
		_ = r.ids.release(id)
	}
	_ = r.releaseJoins(id)
}

// cloneSpec deep-copies s: the caller's spec is never changed, even when
// it is used for several containers at once.
func cloneSpec(s *specs.Spec) (*specs.Spec, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("spec: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	var c specs.Spec
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("spec: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return &c, nil
}

// ownerLive reports whether a container exists, or is being created or
// deleted by someone holding its owner lock: its resources are not
// leftovers.
func (r *Runtime) ownerLive(ctx context.Context) func(string) bool {
	return func(owner string) bool {
		if _, err := r.d.State(ctx, owner); !errdefs.IsNotFound(err) {
			return true
		}
		release, err := r.volumes.TryLockOwner(owner)
		if err != nil {
			return true
		}
		release()
		return false
	}
}
