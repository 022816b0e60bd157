package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/runtime/driver"
)

// Create makes a container from cfg without starting its process.
func (r *Runtime) Create(ctx context.Context, id string, cfg *Config) (*Container, error) {
	c, err := r.create(ctx, id, cfg, nil)
	if err == nil && cfg.RootDisk != "" {
		// The adopted disk now belongs to the container: it moved.
		_ = os.Remove(cfg.RootDisk)
	}
	return c, err
}

// create is Create; disk, when set, is cfg.RootDisk already open (Import).
func (r *Runtime) create(ctx context.Context, id string, cfg *Config, disk *os.File) (*Container, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	if err := validateConfig(id, cfg); err != nil {
		return nil, err
	}
	if cfg.RootDisk != "" && !r.caps.RootDisk {
		return nil, fmt.Errorf("container %q: root disk: the backend has no root disks: %w", id, errdefs.ErrNotImplemented)
	}
	if cfg.Image == "" && cfg.RootDisk == "" {
		if fi, err := os.Stat(cfg.Spec.Root.Path); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("container %q: root filesystem %q is not a directory: %w", id, cfg.Spec.Root.Path, errdefs.ErrInvalidArgument)
		}
	}
	if cfg.DiskSize != 0 && !r.caps.RootDisk {
		return nil, fmt.Errorf("container %q: disk size: the backend has no root disks: %w", id, errdefs.ErrNotImplemented)
	}
	if cfg.DiskSize < 0 {
		return nil, fmt.Errorf("container %q: disk size %d: %w", id, cfg.DiskSize, errdefs.ErrInvalidArgument)
	}
	if cfg.UserNamespace && !r.caps.UserNamespace {
		return nil, fmt.Errorf("container %q: user namespaces: %w", id, errdefs.ErrNotImplemented)
	}
	// The owner lock is held from here until the container exists: two
	// creates of one ID take turns, and recovery in another process never
	// takes this create's ID block or volumes for a crash's leftovers.
	unlock, err := r.volumes.LockOwner(id)
	if err != nil {
		return nil, wrap(id, err)
	}
	defer unlock()
	if _, err := r.d.State(ctx, id); err == nil {
		return nil, fmt.Errorf("container %q: %w", id, errdefs.ErrAlreadyExists)
	} else if !errdefs.IsNotFound(err) {
		return nil, wrap(id, err)
	}
	spec, err := cloneSpec(cfg.Spec)
	if err != nil {
		return nil, wrap(id, err)
	}
	if err := r.confine(id, spec); err != nil {
		return nil, err
	}
	var rng IDRange
	undo := func() {
		_ = r.releaseVolumes(ctx, id)
		_ = r.releaseImage(ctx, id)
		if rng.Size > 0 {
			_ = r.ids.release(id)
		}
	}
	if cfg.UserNamespace {
		spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		// An engine with one mapping for all (Docker's userns-remap)
		// fills it in itself; the others get a block of their own.
		if !r.caps.UserNamespaceShared {
			rng, err = r.ids.allocate(id, r.ownerLive(ctx))
			if err != nil {
				return nil, wrap(id, err)
			}
			m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: rng.HostID, Size: rng.Size}}
			spec.Linux.UIDMappings = m
			spec.Linux.GIDMappings = m
		}
	}
	req := &driver.CreateRequest{ID: id, Spec: spec, Image: cfg.Image, Labels: cfg.Labels, IO: cfg.IO, Log: logLimits(cfg.Log)}
	if cfg.Image != "" {
		if req.ImageSource, err = r.resolveImage(ctx, id, cfg.Image, spec); err != nil {
			undo()
			return nil, wrap(id, err)
		}
	}
	if r.disks != nil {
		err = r.attachRootDisk(ctx, req, cfg, disk)
	}
	if err == nil {
		err = r.attachVolumes(ctx, req, cfg.Volumes, rng)
	}
	if err == nil {
		err = r.d.Create(ctx, req)
	}
	if err != nil {
		// The ID was free under the lock: whatever this call holds is
		// its own, even when the engine says already-exists.
		undo()
		return nil, wrap(id, err)
	}
	return &Container{r: r, id: id}, nil
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
