package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/internal/errclass"
	"github.com/berthrun/berth/runtime/driver"
	"github.com/berthrun/berth/volume"
)

// DefaultStateDir is where berth keeps its records when no other directory
// is given.
const DefaultStateDir = "/var/lib/berth"

// Runtime runs containers on one backend. It is safe for concurrent use,
// and several processes may open runtimes on the same state directory.
type Runtime struct {
	d       driver.Runtime
	caps    driver.Capabilities
	ids     *idAllocator
	volumes *volume.Manager
	images  *image.Store
	// security is what specs may ask for beyond the default confinement.
	security SecurityPolicy
	// ops are the backend's optional interfaces (contract.go); disks
	// makes root disks on backends that have them (see disk.go).
	ops
	stateDir string
	// events serves Events (events.go).
	events *eventHub
}

type options struct {
	stateDir string
	pool     IDPool
	policy   volume.Policy
	images   *image.Store
	security SecurityPolicy
	// idDir holds the host's record of ID blocks (HostIDPoolDir).
	idDir string
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
		// Absolute: mounts and disk paths made under it are recorded
		// by backends and read by later processes.
		abs, err := filepath.Abs(dir)
		if err != nil {
			return fmt.Errorf("state directory %q: %v: %w", dir, err, errdefs.ErrInvalidArgument)
		}
		o.stateDir = abs
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

// WithVolumePolicy sets the rules every volume goes through (default
// volume.DefaultPolicy()).
func WithVolumePolicy(p volume.Policy) Option {
	return func(o *options) error {
		if err := p.Validate(); err != nil {
			return err
		}
		o.policy = p
		return nil
	}
}

// New returns a Runtime over a backend. It also finishes what a crashed
// process left half-done: volumes attached to containers that were never
// created (or were deleted) are detached, and their root disks removed.
//
// A state directory belongs to the first backend that opens it: New with
// another backend is refused with failed-precondition, before anything
// there is touched (each backend knows only its own containers, and would
// take the others' volumes and image holds for a crash's leftovers).
func New(d driver.Runtime, opts ...Option) (*Runtime, error) {
	o := options{stateDir: DefaultStateDir, pool: DefaultIDPool, policy: volume.DefaultPolicy(), idDir: HostIDPoolDir}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	caps := d.Capabilities()
	dops, err := bindOps(d, caps)
	if err != nil {
		return nil, err
	}
	root, err := claimRoot(o.stateDir, d.Name())
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	vm, err := volume.OpenManager(filepath.Join(o.stateDir, "volumes"), o.policy, func(owner string) bool {
		if ValidateID(owner) != nil {
			return false // a snapshot's disk copy, never a container
		}
		_, err := d.State(ctx, owner)
		return !errdefs.IsNotFound(err)
	})
	if err != nil {
		return nil, fmt.Errorf("volumes: %w", errclass.Ensure(err))
	}
	r := &Runtime{
		d:        d,
		caps:     caps,
		ops:      dops,
		ids:      &idAllocator{pool: o.pool, dir: o.idDir, root: root},
		volumes:  vm,
		images:   o.images,
		security: o.security,
		stateDir: o.stateDir,
		events:   newEventHub(d, dops.events),
	}
	if err := r.openDisks(ctx); err != nil {
		return nil, fmt.Errorf("root disks: %w", errclass.Ensure(err))
	}
	r.finishAttaches(ctx)
	return r, nil
}

// finishAttaches takes out of their containers, then off the host, the
// volumes a hot attach killed halfway left unfinished. A container that no
// longer runs holds nothing; one that does keeps the volume until its
// backend can take it out (the next open tries again): what a tenant
// planted in its container never keeps a runtime from opening.
func (r *Runtime) finishAttaches(ctx context.Context) {
	exists := func(owner string) bool {
		_, err := r.d.State(ctx, owner)
		return !errdefs.IsNotFound(err)
	}
	pending, _ := r.volumes.Unfinished(exists)
	for _, p := range pending {
		unlock, err := r.volumes.TryLockOwner(p.Owner)
		if err != nil {
			continue // an attach or detach of it is running now
		}
		info, err := r.d.State(ctx, p.Owner)
		if err == nil && info.Status != StatusStopped && r.attach != nil {
			err = r.attach.DetachVolume(ctx, p.Owner, p.Spec.Destination)
		}
		if err == nil || errdefs.IsNotFound(err) {
			_ = r.volumes.Retire(ctx, p.Owner, p.Spec.Destination)
		}
		unlock()
	}
}

// VolumePolicy returns the policy volumes go through.
func (r *Runtime) VolumePolicy() volume.Policy { return r.volumes.Policy() }

// Capabilities reports what the backend can do.
func (r *Runtime) Capabilities() Capabilities { return r.caps }

// Close ends the event subscriptions (Events) and releases the backend.
// Containers keep running.
func (r *Runtime) Close() error {
	r.events.close()
	return r.d.Close()
}

// As reaches the backend's native runtime type; see the backend's docs.
func (r *Runtime) As(i any) bool { return r.d.As(i) }

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

// Info describes container id: Get(id) then Info, with one read of its
// state instead of two.
func (r *Runtime) Info(ctx context.Context, id string) (*Info, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	i, err := r.d.State(ctx, id)
	if err != nil {
		return nil, wrap(id, err)
	}
	return ownInfo(id, i)
}

// List describes every container of this runtime.
func (r *Runtime) List(ctx context.Context) ([]*Info, error) {
	l, err := r.d.List(ctx)
	if err != nil {
		return nil, errclass.Ensure(err)
	}
	for i, info := range l {
		if l[i], err = ownInfo(info.ID, info); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// wrap names the container in err and makes sure err has an errdefs class.
func wrap(id string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("container %q: %w", id, errclass.Ensure(err))
}

// rootFile names, in a state directory, the backend it belongs to.
const rootFile = "backend"

// claimRoot makes dir (created if needed) the state directory of the
// backend named name, or checks that it is; it returns dir absolute and
// resolved, the name its records are kept under host-wide.
func claimRoot(dir, name string) (string, error) {
	fail := func(err error) (string, error) {
		return "", fmt.Errorf("state directory %s: %w", dir, errclass.Ensure(err))
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return fail(err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fail(err)
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return fail(err)
	}
	path := filepath.Join(abs, rootFile)
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			if owner := strings.TrimSpace(string(b)); owner != name {
				return "", fmt.Errorf("state directory %s belongs to the %s backend, not %s; open it with %s or use another directory: %w", abs, owner, name, owner, errdefs.ErrFailedPrecondition)
			}
			return abs, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return fail(err)
		}
		// First open: the name goes in whole or not at all, and of two
		// first opens only one links its file in.
		tmp, err := os.CreateTemp(abs, ".backend-*")
		if err != nil {
			return fail(err)
		}
		_, err = tmp.WriteString(name + "\n")
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Link(tmp.Name(), path)
		}
		os.Remove(tmp.Name())
		if err != nil && !errors.Is(err, os.ErrExist) {
			return fail(err)
		}
	}
}
