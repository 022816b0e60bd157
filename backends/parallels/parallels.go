package parallels

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/runtime/driver"
	"github.com/berthrun/berth/volume"
)

// DefaultDiskSize is a container's root disk size unless told otherwise.
const DefaultDiskSize = 1 << 30

// rootDst names the root disk among a container's volume attachments.
const rootDst = "/"

// Runtime is the disk-image engine; it implements driver.Runtime.
type Runtime struct {
	base        string
	engine      *libcontainer.Runtime
	disks       *volume.Manager
	defaultSize int64
	fs          diskFS
}

type options struct {
	policy      volume.Policy
	defaultSize int64
	fs          string
	engine      []libcontainer.Option
}

// WithFilesystem sets what new root disks are made of: "ext4" (default) or
// "xfs". Online growth of ext4 needs CAP_SYS_RESOURCE, which sandboxes
// sometimes drop; xfs grows with CAP_SYS_ADMIN but needs disks of at least
// 300 MiB. Capabilities().DiskResize says whether growth works here.
func WithFilesystem(name string) Option {
	return func(o *options) error {
		if _, ok := diskFilesystems[name]; !ok {
			return fmt.Errorf("root disk filesystem %q (want ext4 or xfs): %w", name, errdefs.ErrInvalidArgument)
		}
		o.fs = name
		return nil
	}
}

// Option configures Open.
type Option func(*options) error

// WithPolicy sets the volume policy root disks go through (default
// volume.DefaultPolicy(); the disks are ext4, so it must allow ext4). Give
// the runtime's policy so fsck and the whitelist apply to disks too.
func WithPolicy(p volume.Policy) Option {
	return func(o *options) error {
		if err := p.Validate(); err != nil {
			return err
		}
		o.policy = p
		return nil
	}
}

// WithDefaultDiskSize sets the disk size used when a create gives none.
func WithDefaultDiskSize(n int64) Option {
	return func(o *options) error {
		if n < 16<<20 {
			return fmt.Errorf("default disk size %d is below 16 MiB: %w", n, errdefs.ErrInvalidArgument)
		}
		o.defaultSize = n
		return nil
	}
}

// WithEngineOptions passes options to the embedded libcontainer engine
// (libcontainer.Attached, for instance).
func WithEngineOptions(opts ...libcontainer.Option) Option {
	return func(o *options) error {
		o.engine = append(o.engine, opts...)
		return nil
	}
}

// Open returns the engine keeping its state under root/parallels, and
// cleans up what a crashed process left: disks of containers that were
// never created are detached and removed.
func Open(root string, opts ...Option) (*Runtime, error) {
	o := options{policy: volume.DefaultPolicy(), defaultSize: DefaultDiskSize, fs: "ext4"}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if root == "" {
		root = libcontainer.DefaultRoot
	}
	base := filepath.Join(root, "parallels")
	engine, err := libcontainer.Open(base, append([]libcontainer.Option{libcontainer.WithCgroupParent("berth-parallels")}, o.engine...)...)
	if err != nil {
		return nil, err
	}
	r := &Runtime{base: base, engine: engine, defaultSize: o.defaultSize, fs: diskFilesystems[o.fs]}
	if r.defaultSize < r.fs.minSize {
		r.defaultSize = r.fs.minSize
	}
	if err := os.MkdirAll(r.disksDir(), 0o700); err != nil {
		return nil, err
	}
	r.disks, err = volume.OpenManager(filepath.Join(r.disksDir(), "volumes"), o.policy, r.exists)
	if err != nil {
		return nil, err
	}
	if err := r.sweep(); err != nil {
		return nil, err
	}
	return r, nil
}

// Base is the engine's state directory (root/parallels).
func (r *Runtime) Base() string { return r.base }

func (r *Runtime) disksDir() string          { return filepath.Join(r.base, "disks") }
func (r *Runtime) diskDir(id string) string  { return filepath.Join(r.disksDir(), id) }
func (r *Runtime) diskPath(id string) string { return filepath.Join(r.diskDir(id), "disk.img") }
func (r *Runtime) exists(id string) bool {
	_, err := r.engine.State(context.Background(), id)
	return !errdefs.IsNotFound(err)
}
func (r *Runtime) mountpoint(id string) (string, error) { return r.disks.HostMount(id, rootDst) }

// sweep removes disk directories of containers that do not exist and that
// no create in progress holds, and snapshot copies no snapshot holds.
func (r *Runtime) sweep() error {
	tmps, _ := os.ReadDir(filepath.Join(r.disksDir(), "tmp"))
	for _, e := range tmps {
		owner := strings.TrimSuffix(e.Name(), ".img")
		if unlock, err := r.disks.TryLockOwner(owner); err == nil {
			_ = r.disks.DetachAll(context.Background(), owner)
			_ = os.Remove(filepath.Join(r.disksDir(), "tmp", e.Name()))
			unlock()
		}
	}
	ents, err := os.ReadDir(r.disksDir())
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.IsDir() || e.Name() == "volumes" || e.Name() == "tmp" || r.exists(e.Name()) {
			continue
		}
		unlock, err := r.disks.TryLockOwner(e.Name())
		if err != nil {
			continue
		}
		_ = r.disks.DetachAll(context.Background(), e.Name())
		err = os.RemoveAll(r.diskDir(e.Name()))
		unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// Name implements driver.Runtime.
func (r *Runtime) Name() string { return "parallels" }

// Capabilities implements driver.Runtime.
func (r *Runtime) Capabilities() driver.Capabilities {
	c := r.engine.Capabilities()
	c.RootDisk, c.Snapshot = true, true
	c.DiskResize = hasCapability(r.fs.growCapability)
	return c
}

// As implements driver.Runtime: **Runtime.
func (r *Runtime) As(i any) bool {
	p, ok := i.(**Runtime)
	if ok {
		*p = r
	}
	return ok
}

// Close implements driver.Runtime.
func (r *Runtime) Close() error { return r.engine.Close() }

// Create implements driver.Runtime: make (or adopt) the disk, attach it
// through the volume policy, run the container on its host mount.
func (r *Runtime) Create(ctx context.Context, req *driver.CreateRequest) (retErr error) {
	if req.Image != "" && req.ImageSource == nil {
		return fmt.Errorf("image %q: this engine takes images from berth's image store (runtime.WithImageStore): %w", req.Image, errdefs.ErrNotImplemented)
	}
	unlock, err := r.disks.LockOwner(req.ID)
	if err != nil {
		return err
	}
	defer unlock()
	if r.exists(req.ID) {
		return fmt.Errorf("container exists: %w", errdefs.ErrAlreadyExists)
	}
	dir := r.diskDir(req.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("disk of a container being created or deleted: %w", errdefs.ErrAlreadyExists)
		}
		return err
	}
	defer func() {
		if retErr != nil {
			_ = r.disks.DetachAll(context.Background(), req.ID)
			_ = os.RemoveAll(dir)
		}
	}()
	var fixups []fixup
	if req.RootDisk != "" {
		// A link (or a copy): the caller's file is left alone until the
		// container exists, so a refused create loses nothing.
		err = adopt(req.RootDisk, r.diskPath(req.ID))
	} else {
		size := req.DiskSize
		if size == 0 {
			size = r.defaultSize
		}
		if size < r.fs.minSize {
			return fmt.Errorf("disk size %d is below the %d bytes %s needs: %w", size, r.fs.minSize, r.fs.name, errdefs.ErrInvalidArgument)
		}
		tree := ""
		if req.ImageSource != nil {
			// The disk holds a copy: the shared tree is only read here.
			tree, err = req.ImageSource.Rootfs(ctx)
		} else {
			tree = req.Spec.Root.Path
		}
		if err == nil {
			fixups, err = r.makeDisk(ctx, r.diskPath(req.ID), tree, size)
		}
	}
	if err != nil {
		return err
	}
	att, err := r.disks.Attach(ctx, req.ID, volume.Spec{Source: r.diskPath(req.ID), Destination: rootDst, Kind: volume.KindImage}, volume.AttachOptions{})
	if err != nil {
		return fmt.Errorf("root disk: %w", err)
	}
	if _, ok := diskFilesystems[att.FS.Driver]; !ok {
		return fmt.Errorf("root disk holds %s, not ext4 or xfs: %w", att.FS.Type, errdefs.ErrInvalidArgument)
	}
	if err := applyFixups(att.Mount.Source, fixups); err != nil {
		return err
	}
	spec := *req.Spec
	spec.Root = &specs.Root{Path: att.Mount.Source}
	if req.Spec.Root != nil {
		spec.Root.Readonly = req.Spec.Root.Readonly
	}
	inner := *req
	inner.Spec, inner.DiskSize, inner.RootDisk = &spec, 0, ""
	inner.Image, inner.ImageSource = "", nil
	if err := r.engine.Create(ctx, &inner); err != nil {
		return err
	}
	if req.RootDisk != "" {
		// The disk now belongs to the container: it moved.
		_ = os.Remove(req.RootDisk)
	}
	return nil
}

// makeDisk creates a sparse image of size bytes holding the tree under
// rootfs, without mounting anything.
func (r *Runtime) makeDisk(ctx context.Context, path, rootfs string, size int64) ([]fixup, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	fixups, err := r.fs.populate(ctx, path, rootfs)
	if err != nil && !errdefs.IsInvalidArgument(err) {
		msg := err.Error()
		if strings.Contains(msg, "Could not allocate") || strings.Contains(msg, "No space left") || strings.Contains(msg, "too small") {
			return nil, fmt.Errorf("disk of %d bytes is too small for %s: %v: %w", size, rootfs, err, errdefs.ErrInvalidArgument)
		}
	}
	return fixups, err
}

// adopt puts an existing disk image at dst: a hard link where both are on
// one filesystem, a sparse copy otherwise. The source stays until the
// caller drops it.
func adopt(src, dst string) error {
	fi, err := os.Stat(src)
	if err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("root disk %s is not a regular file: %w", src, errdefs.ErrInvalidArgument)
	}
	if err := os.Link(src, dst); err == nil {
		return nil
	} else if !errors.Is(err, syscall.EXDEV) {
		return err
	}
	return copySparse(src, dst)
}

// Delete implements driver.Runtime: the container, then its disk.
func (r *Runtime) Delete(ctx context.Context, id string) error {
	unlock, err := r.disks.LockOwner(id)
	if err != nil {
		return err
	}
	defer unlock()
	if err := r.engine.Delete(ctx, id); err != nil {
		return err
	}
	return r.dropDisk(ctx, id)
}

func (r *Runtime) dropDisk(ctx context.Context, id string) error {
	if err := r.disks.DetachAll(ctx, id); err != nil {
		return err
	}
	return os.RemoveAll(r.diskDir(id))
}

// The rest is the embedded engine's.

// Start implements driver.Runtime.
func (r *Runtime) Start(ctx context.Context, id string) error { return r.engine.Start(ctx, id) }

// Wait implements driver.Runtime.
func (r *Runtime) Wait(ctx context.Context, id string) (driver.ExitStatus, error) {
	return r.engine.Wait(ctx, id)
}

// Kill implements driver.Runtime.
func (r *Runtime) Kill(ctx context.Context, id string, sig syscall.Signal) error {
	return r.engine.Kill(ctx, id, sig)
}

// State implements driver.Runtime.
func (r *Runtime) State(ctx context.Context, id string) (*driver.Info, error) {
	return r.engine.State(ctx, id)
}

// List implements driver.Runtime.
func (r *Runtime) List(ctx context.Context) ([]*driver.Info, error) { return r.engine.List(ctx) }

// Exec implements driver.Runtime.
func (r *Runtime) Exec(ctx context.Context, id string, p *driver.ProcessSpec, pio driver.IO) (driver.Process, error) {
	return r.engine.Exec(ctx, id, p, pio)
}

// Pause implements driver.Runtime.
func (r *Runtime) Pause(ctx context.Context, id string) error { return r.engine.Pause(ctx, id) }

// Resume implements driver.Runtime.
func (r *Runtime) Resume(ctx context.Context, id string) error { return r.engine.Resume(ctx, id) }

// Update implements driver.Runtime.
func (r *Runtime) Update(ctx context.Context, id string, res *driver.Resources) error {
	return r.engine.Update(ctx, id, res)
}

// Stats implements driver.Runtime.
func (r *Runtime) Stats(ctx context.Context, id string) (*driver.Stats, error) {
	return r.engine.Stats(ctx, id)
}

// Logs implements driver.Runtime.
func (r *Runtime) Logs(ctx context.Context, id string) (io.ReadCloser, error) {
	return r.engine.Logs(ctx, id)
}

// AttachVolume implements driver.Runtime.
func (r *Runtime) AttachVolume(ctx context.Context, id string, a *driver.Attachment) error {
	return r.engine.AttachVolume(ctx, id, a)
}

// DetachVolume implements driver.Runtime.
func (r *Runtime) DetachVolume(ctx context.Context, id, dst string) error {
	return r.engine.DetachVolume(ctx, id, dst)
}
