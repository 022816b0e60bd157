package parallels

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/runtime/driver"
)

// DefaultDiskSize is a container's root disk size unless told otherwise.
const DefaultDiskSize = 1 << 30

// diskAnnotation records, in the spec the embedded engine keeps, the image
// file of the container's root disk (the runtime's). State and List never
// show it.
const diskAnnotation = "run.berth.parallels.disk-image"

// Runtime is the disk-image engine; it implements driver.Runtime,
// driver.DiskMaker and the optional interfaces below. Snapshots are the
// runtime's, over SnapshotDisk copies: it is no driver.Snapshotter.
type Runtime struct {
	base        string
	engine      *libcontainer.Runtime
	defaultSize int64
	fs          diskFS
}

var (
	_ driver.DiskMaker       = (*Runtime)(nil)
	_ driver.DiskResizer     = (*Runtime)(nil)
	_ driver.Execer          = (*Runtime)(nil)
	_ driver.Pauser          = (*Runtime)(nil)
	_ driver.Updater         = (*Runtime)(nil)
	_ driver.StatsReader     = (*Runtime)(nil)
	_ driver.Logger          = (*Runtime)(nil)
	_ driver.VolumeAttacher  = (*Runtime)(nil)
	_ driver.ContainerAser   = (*Runtime)(nil)
	_ driver.CRILogReopener  = (*Runtime)(nil)
	_ driver.DiskMaker       = (*Runtime)(nil)
	_ driver.DiskResizer     = (*Runtime)(nil)
	_ driver.Execer          = (*Runtime)(nil)
	_ driver.Pauser          = (*Runtime)(nil)
	_ driver.Updater         = (*Runtime)(nil)
	_ driver.StatsReader     = (*Runtime)(nil)
	_ driver.Logger          = (*Runtime)(nil)
	_ driver.VolumeAttacher  = (*Runtime)(nil)
	_ driver.ContainerAser   = (*Runtime)(nil)
	_ driver.NamespaceOpener = (*Runtime)(nil)
	_ driver.Attacher        = (*Runtime)(nil)
)

type options struct {
	defaultSize int64
	fs          string
	engine      []libcontainer.Option
}

// WithFilesystem sets what new root disks are made of: "ext4" (default) or
// "xfs". Online growth of ext4 needs CAP_SYS_RESOURCE, which sandboxes
// sometimes drop; xfs grows with CAP_SYS_ADMIN but needs disks of at least
// 300 MiB. Capabilities().DiskResize says whether growth works here. The
// runtime's volume policy (runtime.WithVolumePolicy) must allow it.
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

// Open returns the engine keeping its state under root/parallels. The
// disks themselves belong to the runtime opened over it (runtime.New),
// which attaches them under its volume policy and cleans up after crashes.
func Open(root string, opts ...Option) (*Runtime, error) {
	o := options{defaultSize: DefaultDiskSize, fs: "ext4"}
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
	return r, nil
}

// Base is the engine's state directory (root/parallels).
func (r *Runtime) Base() string { return r.base }

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

// MakeDisk implements driver.DiskMaker: a sparse image of size bytes
// holding the tree, made by mkfs without mounting anything.
func (r *Runtime) MakeDisk(ctx context.Context, path string, size int64, tree string) (*driver.MadeDisk, error) {
	if size == 0 {
		size = r.defaultSize
	}
	if size < r.fs.minSize {
		return nil, fmt.Errorf("disk size %d is below the %d bytes %s needs: %w", size, r.fs.minSize, r.fs.name, errdefs.ErrInvalidArgument)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	var modes []driver.PathMode
	if err == nil {
		modes, err = r.fs.populate(ctx, path, tree)
	}
	if err != nil {
		_ = os.Remove(path)
		if !errdefs.IsInvalidArgument(err) {
			msg := err.Error()
			if strings.Contains(msg, "Could not allocate") || strings.Contains(msg, "No space left") || strings.Contains(msg, "too small") {
				return nil, fmt.Errorf("disk of %d bytes is too small for %s: %v: %w", size, tree, err, errdefs.ErrInvalidArgument)
			}
		}
		return nil, err
	}
	return &driver.MadeDisk{Modes: modes}, nil
}

// Create implements driver.Runtime: run the container on its root disk,
// which the runtime made with MakeDisk (or adopted), attached and mounted
// at Spec.Root.Path.
func (r *Runtime) Create(ctx context.Context, req *driver.CreateRequest) error {
	if req.RootDiskImage == "" || req.Spec.Root == nil || req.Spec.Root.Path == "" {
		return fmt.Errorf("no root disk: containers of this engine get theirs from the runtime (runtime.New): %w", errdefs.ErrInvalidArgument)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(req.Spec.Root.Path, &st); err != nil {
		return fmt.Errorf("root disk: %w", err)
	}
	if st.Type != unix.EXT4_SUPER_MAGIC && st.Type != unix.XFS_SUPER_MAGIC {
		return fmt.Errorf("root disk holds a filesystem of type %#x, not ext4 or xfs: %w", st.Type, errdefs.ErrInvalidArgument)
	}
	spec := *req.Spec
	spec.Annotations = maps.Clone(req.Spec.Annotations)
	if spec.Annotations == nil {
		spec.Annotations = map[string]string{}
	}
	spec.Annotations[diskAnnotation] = req.RootDiskImage
	inner := *req
	inner.Spec, inner.RootDiskImage = &spec, ""
	return r.engine.Create(ctx, &inner)
}

// rootDisk is a container's root disk as the runtime attached it.
type rootDisk struct {
	img    string // the image file
	mp     string // its host mount
	dev    string // the loop device mounted there, backed by img
	fsType string
	info   *driver.Info
}

// disk finds the container's root disk: the image its spec names, mounted
// from a loop device backed by that very file.
func (r *Runtime) disk(ctx context.Context, id string) (*rootDisk, error) {
	info, err := r.engine.State(ctx, id)
	if err != nil {
		return nil, err
	}
	d := &rootDisk{img: info.Spec.Annotations[diskAnnotation], info: info}
	if d.img == "" || info.Spec.Root == nil || info.Spec.Root.Path == "" {
		return nil, fmt.Errorf("container has no root disk: %w", errdefs.ErrFailedPrecondition)
	}
	d.mp = info.Spec.Root.Path
	mi, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(d.mp))
	if err != nil || len(mi) != 1 || !strings.HasPrefix(mi[0].Source, "/dev/loop") {
		return nil, fmt.Errorf("root disk is not mounted from a loop device: %w", errdefs.ErrFailedPrecondition)
	}
	d.dev, d.fsType = mi[0].Source, mi[0].FSType
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(d.dev), "loop", "backing_file"))
	if err == nil {
		backing, berr := os.Stat(strings.TrimSpace(string(b)))
		file, ferr := os.Stat(d.img)
		if berr == nil && ferr == nil && os.SameFile(backing, file) {
			return d, nil
		}
	}
	return nil, fmt.Errorf("root disk %s is not the file behind %s: %w", d.img, d.dev, errdefs.ErrFailedPrecondition)
}

// public hides the disk annotation from what callers see.
func public(i *driver.Info) *driver.Info {
	if i == nil || i.Spec == nil {
		return i
	}
	if _, ok := i.Spec.Annotations[diskAnnotation]; !ok {
		return i
	}
	out, spec := *i, *i.Spec
	spec.Annotations = maps.Clone(spec.Annotations)
	delete(spec.Annotations, diskAnnotation)
	if len(spec.Annotations) == 0 {
		spec.Annotations = nil
	}
	out.Spec = &spec
	return &out
}

// Delete implements driver.Runtime. The disk is the runtime's to detach
// and remove.
func (r *Runtime) Delete(ctx context.Context, id string) error { return r.engine.Delete(ctx, id) }

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
	i, err := r.engine.State(ctx, id)
	return public(i), err
}

// List implements driver.Runtime.
func (r *Runtime) List(ctx context.Context) ([]*driver.Info, error) {
	l, err := r.engine.List(ctx)
	for i := range l {
		l[i] = public(l[i])
	}
	return l, err
}

// Exec implements driver.Execer.
func (r *Runtime) Exec(ctx context.Context, id string, p *driver.ProcessSpec, pio driver.IO) (driver.Process, error) {
	return r.engine.Exec(ctx, id, p, pio)
}

// Pause implements driver.Runtime.
func (r *Runtime) Pause(ctx context.Context, id string) error { return r.engine.Pause(ctx, id) }

// Resume implements driver.Runtime.
func (r *Runtime) Resume(ctx context.Context, id string) error { return r.engine.Resume(ctx, id) }

// Update implements driver.Updater.
func (r *Runtime) Update(ctx context.Context, id string, res *driver.Resources) error {
	return r.engine.Update(ctx, id, res)
}

// Stats implements driver.StatsReader.
func (r *Runtime) Stats(ctx context.Context, id string) (*driver.Stats, error) {
	return r.engine.Stats(ctx, id)
}

// Logs implements driver.Logger.
func (r *Runtime) Logs(ctx context.Context, id string) (io.ReadCloser, error) {
	return r.engine.Logs(ctx, id)
}

// FollowLogs implements driver.LogFollower.
func (r *Runtime) FollowLogs(ctx context.Context, id string, tail int, w io.Writer) error {
	return r.engine.FollowLogs(ctx, id, tail, w)
}

// ReopenCRILog implements driver.CRILogReopener.
func (r *Runtime) ReopenCRILog(ctx context.Context, id string) error {
	return r.engine.ReopenCRILog(ctx, id)
}

// Attach implements driver.Attacher.
func (r *Runtime) Attach(ctx context.Context, id string, pio driver.IO) error {
	return r.engine.Attach(ctx, id, pio)
}

// ResizeTerminal implements driver.Attacher.
func (r *Runtime) ResizeTerminal(ctx context.Context, id string, size specs.Box) error {
	return r.engine.ResizeTerminal(ctx, id, size)
}

// AttachVolume implements driver.Runtime.
func (r *Runtime) AttachVolume(ctx context.Context, id string, a *driver.Attachment) error {
	return r.engine.AttachVolume(ctx, id, a)
}

// OpenNamespace implements driver.NamespaceOpener.
func (r *Runtime) OpenNamespace(ctx context.Context, id string, typ specs.LinuxNamespaceType) (*os.File, string, error) {
	return r.engine.OpenNamespace(ctx, id, typ)
}

// DetachVolume implements driver.Runtime.
func (r *Runtime) DetachVolume(ctx context.Context, id, dst string) error {
	return r.engine.DetachVolume(ctx, id, dst)
}
