package runtime

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/runtime/driver"
)

// DefaultStateDir is where berth keeps its records when no other directory
// is given.
const DefaultStateDir = "/var/lib/berth"

// Runtime runs containers on one backend. It is safe for concurrent use,
// and several processes may open runtimes on the same state directory.
type Runtime struct {
	d    driver.Runtime
	caps driver.Capabilities
	ids  *idAllocator
}

type options struct {
	stateDir string
	pool     IDPool
}

// Option configures a Runtime.
type Option func(*options) error

// WithStateDir sets the directory where the portable layer keeps its records
// (user namespace allocations). Use the same directory as the backend's root.
func WithStateDir(dir string) Option {
	return func(o *options) error {
		if dir == "" {
			return fmt.Errorf("empty state directory: %w", errdefs.ErrInvalidArgument)
		}
		o.stateDir = dir
		return nil
	}
}

// WithIDPool sets the host ID space user-namespaced containers get blocks
// from (default DefaultIDPool).
func WithIDPool(p IDPool) Option {
	return func(o *options) error {
		if p.BlockSize == 0 || p.Count == 0 {
			return fmt.Errorf("ID pool needs a block size and a count: %w", errdefs.ErrInvalidArgument)
		}
		if uint64(p.Start)+uint64(p.BlockSize) > 1<<32-1 {
			return fmt.Errorf("ID pool starting at %d does not fit 32 bits: %w", p.Start, errdefs.ErrInvalidArgument)
		}
		o.pool = p
		return nil
	}
}

// New returns a Runtime over a backend.
func New(d driver.Runtime, opts ...Option) (*Runtime, error) {
	o := options{stateDir: DefaultStateDir, pool: DefaultIDPool}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	return &Runtime{
		d:    d,
		caps: d.Capabilities(),
		ids:  &idAllocator{pool: o.pool, dir: o.stateDir},
	}, nil
}

// Capabilities reports what the backend can do.
func (r *Runtime) Capabilities() Capabilities { return r.caps }

// Close releases the backend. Containers keep running.
func (r *Runtime) Close() error { return r.d.Close() }

// As reaches the backend's native runtime type; see the backend's docs.
func (r *Runtime) As(i any) bool { return r.d.As(i) }

// Create makes a container from cfg without starting its process.
func (r *Runtime) Create(ctx context.Context, id string, cfg *Config) (*Container, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	if err := validateConfig(id, cfg); err != nil {
		return nil, err
	}
	if cfg.Image == "" {
		if fi, err := os.Stat(cfg.Spec.Root.Path); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("container %q: root filesystem %q is not a directory: %w", id, cfg.Spec.Root.Path, errdefs.ErrInvalidArgument)
		}
	}
	if _, err := r.d.State(ctx, id); err == nil {
		return nil, fmt.Errorf("container %q: %w", id, errdefs.ErrAlreadyExists)
	} else if !errdefs.IsNotFound(err) {
		return nil, wrap(id, err)
	}
	spec := cloneSpec(cfg.Spec)
	if cfg.UserNamespace {
		if !r.caps.UserNamespace {
			return nil, fmt.Errorf("container %q: user namespaces: %w", id, errdefs.ErrNotImplemented)
		}
		rng, err := r.ids.allocate(id, func(owner string) bool {
			_, err := r.d.State(ctx, owner)
			return !errdefs.IsNotFound(err)
		})
		if err != nil {
			return nil, wrap(id, err)
		}
		spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: rng.HostID, Size: rng.Size}}
		spec.Linux.UIDMappings = m
		spec.Linux.GIDMappings = m
	}
	err := r.d.Create(ctx, &driver.CreateRequest{ID: id, Spec: spec, Image: cfg.Image, Labels: cfg.Labels, IO: cfg.IO})
	if err != nil {
		if cfg.UserNamespace && !errdefs.IsAlreadyExists(err) {
			_ = r.ids.release(id)
		}
		return nil, wrap(id, err)
	}
	return &Container{r: r, id: id}, nil
}

// Get returns the container named id, created by this or another process on
// the same root.
func (r *Runtime) Get(ctx context.Context, id string) (*Container, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	if _, err := r.d.State(ctx, id); err != nil {
		return nil, wrap(id, err)
	}
	return &Container{r: r, id: id}, nil
}

// List describes every container of this runtime.
func (r *Runtime) List(ctx context.Context) ([]*Info, error) {
	l, err := r.d.List(ctx)
	if err != nil {
		return nil, classify(err)
	}
	return l, nil
}

// wrap names the container in err and makes sure err has an errdefs class.
func wrap(id string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("container %q: %w", id, classify(err))
}

// classes are the errdefs classes berth reports.
var classes = []func(error) bool{
	errdefs.IsNotFound, errdefs.IsAlreadyExists, errdefs.IsInvalidArgument,
	errdefs.IsFailedPrecondition, errdefs.IsNotImplemented, errdefs.IsPermissionDenied,
	errdefs.IsResourceExhausted, errdefs.IsUnavailable, errdefs.IsCanceled,
	errdefs.IsDeadlineExceeded, errdefs.IsConflict, errdefs.IsUnknown, errdefs.IsInternal,
	errdefs.IsAborted, errdefs.IsOutOfRange, errdefs.IsDataLoss, errdefs.IsUnauthorized,
}

// classify gives an unclassified error the unknown class. Context errors
// are classes of their own (errdefs.IsCanceled, IsDeadlineExceeded).
func classify(err error) error {
	for _, is := range classes {
		if is(err) {
			return err
		}
	}
	return fmt.Errorf("%w: %w", err, errdefs.ErrUnknown)
}

func cloneSpec(s *specs.Spec) *specs.Spec {
	c := *s
	if s.Linux != nil {
		l := *s.Linux
		l.Namespaces = append([]specs.LinuxNamespace(nil), s.Linux.Namespaces...)
		c.Linux = &l
	}
	if s.Root != nil {
		root := *s.Root
		c.Root = &root
	}
	return &c
}
