package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/runtime/driver"
	"github.com/berthrun/berth/volume"
)

// attachVolumes attaches each volume through the manager (policy, probe,
// host mount) and hands the backend only the result: bind mounts and
// device nodes.
func (r *Runtime) attachVolumes(ctx context.Context, req *driver.CreateRequest, vols []volume.Spec, rng IDRange) error {
	opts := volume.AttachOptions{UserNamespace: driver.HasUserNamespace(req.Spec)}
	if rng.Size > 0 {
		opts.RootUID, opts.RootGID = rng.HostID, rng.HostID
	}
	if err := r.attachBinds(ctx, req, opts); err != nil {
		return err
	}
	for _, v := range vols {
		if filepath.Clean(v.Destination) == "/" {
			return fmt.Errorf("volume %s: a volume cannot replace the root filesystem: %w", v.Destination, errdefs.ErrInvalidArgument)
		}
		if v.Mode == volume.ModeRawBlock && !r.caps.RawBlock {
			return fmt.Errorf("volume %s: raw block devices: %w", v.Destination, errdefs.ErrNotImplemented)
		}
		att, err := r.volumes.Attach(ctx, req.ID, v, opts)
		if err != nil {
			return err
		}
		da := toDriver(att, req.Spec)
		if da.Mount != nil {
			req.Spec.Mounts = append(req.Spec.Mounts, *da.Mount)
		}
		if da.Device != nil {
			req.Devices = append(req.Devices, *da.Device)
		}
	}
	return nil
}

// attachBinds puts each bind mount of the spec through the volume manager,
// as a directory or file volume: its source is resolved once, opened
// without following links and checked (never on a kernel interface
// filesystem, nor holding one), and the backend binds berth's mount of the
// opened source, nosuid and nodev, instead of a path a tenant could swap
// in the meantime. The caller's other options stay as they were, and keep
// their OCI meaning (bindVolumeSpec): berth's mount is read-only and
// propagates as they ask.
func (r *Runtime) attachBinds(ctx context.Context, req *driver.CreateRequest, opts volume.AttachOptions) error {
	for i, m := range req.Spec.Mounts {
		if !isBindMount(m) {
			continue
		}
		if !filepath.IsAbs(m.Source) {
			return fmt.Errorf("bind source %q is not an absolute path: %w", m.Source, errdefs.ErrInvalidArgument)
		}
		kind := volume.KindDir
		fi, err := os.Stat(m.Source)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return fmt.Errorf("bind source %s: %w", m.Source, errdefs.ErrNotFound)
		case err != nil:
			return fmt.Errorf("bind source %s: %v: %w", m.Source, err, errdefs.ErrInvalidArgument)
		case fi.Mode().IsRegular():
			kind = volume.KindFile
		case !fi.IsDir():
			return fmt.Errorf("bind source %s is a %s: only directories and regular files are bound (devices come through volumes): %w", m.Source, fi.Mode().Type(), errdefs.ErrInvalidArgument)
		}
		sp := bindVolumeSpec(m)
		sp.Source, sp.Destination, sp.Kind = m.Source, filepath.Clean(m.Destination), kind
		att, err := r.volumes.Attach(ctx, req.ID, sp, opts)
		if err != nil {
			return err
		}
		req.Spec.Mounts[i].Source = att.Mount.Source
		req.Spec.Mounts[i].Options = append(slices.Clone(m.Options), "nosuid", "nodev")
		idmapBind(&req.Spec.Mounts[i], req.Spec)
	}
	return nil
}

// bindVolumeSpec returns what a spec's bind asks of its volume, as OCI
// and runc read the options: "ro" makes the bind read-only, not the mounts
// under its source (NonRecursiveReadOnly); "rro" makes them all read-only,
// whatever "rw" says; the last of "ro" and "rw" (of "rro" and "rrw") wins;
// the last propagation option (private, slave, shared, recursive or not)
// is the propagation of berth's mount, recursively.
func bindVolumeSpec(m specs.Mount) volume.Spec {
	var sp volume.Spec
	ro, rro := false, false
	for _, o := range m.Options {
		switch o {
		case "ro":
			ro = true
		case "rw":
			ro = false
		case "rro":
			rro = true
		case "rrw":
			rro = false
		}
		if p := volume.PropagationOf(o); p != "" {
			sp.Propagation = p
		}
	}
	sp.ReadOnly = ro || rro
	sp.NonRecursiveReadOnly = ro && !rro
	return sp
}

// toDriver turns a volume attachment into what a backend takes. In a user
// namespace, bind mounts are ID-mapped (idmapBind).
func toDriver(att *volume.Attachment, spec *specs.Spec) *driver.Attachment {
	da := &driver.Attachment{}
	if att.Mount != nil {
		m := *att.Mount
		m.Options = append([]string(nil), m.Options...)
		idmapBind(&m, spec)
		da.Mount = &m
	}
	if d := att.Device; d != nil {
		da.Device = &driver.Device{HostPath: d.HostPath, Path: d.Path, Major: d.Major, Minor: d.Minor, ReadOnly: d.ReadOnly}
	}
	return da
}

// idmapBind ID-maps a bind mount of a user-namespaced container with the
// container's mapping when the runtime gave it one (an engine with a
// shared mapping applies its own), so the host's root-owned files belong
// to the container's root.
func idmapBind(m *specs.Mount, spec *specs.Spec) {
	if m.Type != "bind" || !driver.HasUserNamespace(spec) || slices.Contains(m.Options, "idmap") {
		return
	}
	m.Options = append(m.Options, "idmap")
	m.UIDMappings = spec.Linux.UIDMappings
	m.GIDMappings = spec.Linux.GIDMappings
}

// AttachVolume attaches a volume to the created or running container, which
// sees it at once, without a restart. The volume goes through the runtime's
// policy exactly as at create.
func (c *Container) AttachVolume(ctx context.Context, v volume.Spec) error {
	if err := c.capable("hot attach", c.r.attach != nil); err != nil {
		return err
	}
	if filepath.Clean(v.Destination) == "/" {
		return fmt.Errorf("container %q: volume %s: a volume cannot replace the root filesystem: %w", c.id, v.Destination, errdefs.ErrInvalidArgument)
	}
	if v.Mode == volume.ModeRawBlock && !c.r.caps.RawBlock {
		return fmt.Errorf("container %q: volume %s: raw block devices: %w", c.id, v.Destination, errdefs.ErrNotImplemented)
	}
	if (v.Propagation != "" && v.Propagation != volume.PropagationPrivate) || v.NonRecursiveReadOnly {
		// A hot attach binds a private copy, read-only all the way.
		return fmt.Errorf("container %q: volume %s: propagation or non-recursive read-only on a hot attach: %w", c.id, v.Destination, errdefs.ErrNotImplemented)
	}
	i, err := c.require(ctx, "attach a volume to", StatusCreated, StatusRunning)
	if err != nil {
		return err
	}
	unlock, err := c.r.volumes.LockOwner(c.id)
	if err != nil {
		return wrap(c.id, err)
	}
	defer unlock()
	opts := volume.AttachOptions{UserNamespace: driver.HasUserNamespace(i.Spec), Pending: true}
	if i.Spec != nil && i.Spec.Linux != nil && len(i.Spec.Linux.UIDMappings) > 0 && len(i.Spec.Linux.GIDMappings) > 0 {
		opts.RootUID, opts.RootGID = i.Spec.Linux.UIDMappings[0].HostID, i.Spec.Linux.GIDMappings[0].HostID
	}
	att, err := c.r.volumes.Attach(ctx, c.id, v, opts)
	if err != nil {
		return wrap(c.id, err)
	}
	err = c.r.attach.AttachVolume(ctx, c.id, toDriver(att, i.Spec))
	if err == nil {
		if err = c.r.volumes.Complete(c.id, att.Spec.Destination); err != nil {
			_ = c.r.attach.DetachVolume(context.WithoutCancel(ctx), c.id, att.Spec.Destination)
		}
	}
	if err != nil {
		_ = c.r.volumes.Detach(context.WithoutCancel(ctx), c.id, att.Spec.Destination)
		return wrap(c.id, err)
	}
	c.r.releaseHostBinds(c.id)
	return nil
}

// releaseHostBinds takes the runtime's mounts of id's bind sources off
// the host once the engine holds its own (Capabilities.BindsAtCreate).
// It is best effort: a mount it leaves is the state before it, and goes
// with the container's volumes.
func (r *Runtime) releaseHostBinds(id string) {
	if r.caps.BindsAtCreate {
		_ = r.volumes.ReleaseHostBinds(id)
	}
}

// DetachVolume removes the volume at dst from the container, then from the
// host (unmount, loop device, node).
func (c *Container) DetachVolume(ctx context.Context, dst string) error {
	if err := c.capable("hot detach", c.r.attach != nil); err != nil {
		return err
	}
	if _, err := c.require(ctx, "detach a volume from", StatusCreated, StatusRunning); err != nil {
		return err
	}
	unlock, err := c.r.volumes.LockOwner(c.id)
	if err != nil {
		return wrap(c.id, err)
	}
	defer unlock()
	if !slices.ContainsFunc(c.volumeSpecs(), func(v volume.Spec) bool { return v.Destination == filepath.Clean(dst) }) {
		return fmt.Errorf("container %q: no volume at %s: %w", c.id, dst, errdefs.ErrNotFound)
	}
	if err := c.r.attach.DetachVolume(ctx, c.id, filepath.Clean(dst)); err != nil {
		return wrap(c.id, err)
	}
	// The container lives on, perhaps with descriptors of the volume it
	// opened before: the source stays its own until it is deleted.
	return wrap(c.id, c.r.volumes.Retire(ctx, c.id, dst))
}

// Volumes lists the volumes attached to the container.
func (c *Container) Volumes(ctx context.Context) ([]volume.Spec, error) {
	if _, err := c.info(ctx); err != nil {
		return nil, err
	}
	return c.volumeSpecs(), nil
}

func (c *Container) volumeSpecs() []volume.Spec {
	v, _ := c.r.volumes.Attachments(c.id)
	return volumesOnly(v)
}
