package runtime

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fsutil"
)

// Sharing namespaces (Config.Join). The runtime checks what a create
// joins and records it under its state directory (joins.json, under
// joins.lock) before the backend sees the request:
//
//   - a create takes the target's owner lock for a moment (never waiting:
//     a target being created, deleted or given a volume is refused), sees
//     it live, and records the join before it lets go; a delete, holding
//     its own owner lock, refuses while a recorded joiner exists or is
//     being created. No container is deleted while another that joined
//     it exists, whichever process asks, and the record survives the
//     process (a crashed create's entries are dropped once its owner lock
//     is free and it has no container).
//   - a joined user namespace is also an entry of the joiner in the
//     host's ID pool, for the target's block: the block goes back to the
//     pool only when no container holding it remains.
//   - the backend joins the namespaces the target's init was created
//     with, never a process that took its pid (driver.CreateRequest.Join).

// joinable are the namespaces Config.Join may name, in the order a create
// checks them.
var joinable = []specs.LinuxNamespaceType{
	specs.UserNamespace, specs.NetworkNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.PIDNamespace,
}

// namespaceTypes are the namespaces OpenNamespace and NamespacePath
// reach.
var namespaceTypes = append(slices.Clone(joinable), specs.MountNamespace, specs.CgroupNamespace, specs.TimeNamespace)

// joinTypes returns the types of join in a stable order (joinable's, then
// the others sorted), so that errors do not depend on map order.
func joinTypes(join map[specs.LinuxNamespaceType]string) []specs.LinuxNamespaceType {
	var out []specs.LinuxNamespaceType
	for _, t := range joinable {
		if _, ok := join[t]; ok {
			out = append(out, t)
		}
	}
	var rest []specs.LinuxNamespaceType
	for t := range join {
		if !slices.Contains(joinable, t) {
			rest = append(rest, t)
		}
	}
	slices.Sort(rest)
	return append(rest, out...)
}

// validateJoin checks c.Join against the config alone.
func validateJoin(id string, c *Config) error {
	for _, t := range joinTypes(c.Join) {
		target := c.Join[t]
		switch t {
		case specs.MountNamespace, specs.CgroupNamespace, specs.TimeNamespace:
			return invalidConfig(id, "join: the %s namespace cannot be shared (a container always has its own)", t)
		}
		if !slices.Contains(joinable, t) {
			return invalidConfig(id, "join: unknown namespace type %q (network, ipc, uts, pid or user)", t)
		}
		if err := ValidateID(target); err != nil {
			return invalidConfig(id, "join %s: %v", t, err)
		}
		if target == id {
			return invalidConfig(id, "join %s: a container cannot join itself", t)
		}
		for _, ns := range c.Spec.Linux.Namespaces {
			if ns.Type == t && ns.Path != "" {
				return invalidConfig(id, "join %s: the spec joins that namespace at %s already", t, ns.Path)
			}
		}
	}
	if x, ok := c.Join[specs.UserNamespace]; ok && c.UserNamespace {
		return invalidConfig(id, "join user: the user namespace is container %q's, leave Config.UserNamespace false", x)
	}
	if x, ok := c.Join[specs.UTSNamespace]; ok && (c.Spec.Hostname != "" || c.Spec.Domainname != "") {
		return invalidConfig(id, "join uts: the hostname is container %q's, leave the spec's hostname and domain name empty", x)
	}
	return nil
}

// addJoined lists the joined namespaces in spec, without a path (the
// backend joins them by container, driver.CreateRequest.Join), so that
// the security policy never takes them for the host's. The user
// namespace comes with its mappings (joinUserNamespace).
func addJoined(spec *specs.Spec, join map[specs.LinuxNamespaceType]string) {
	for _, t := range joinTypes(join) {
		if t != specs.UserNamespace && !hasNamespace(spec, t) {
			spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: t})
		}
	}
}

// joinEntry records that container ID shares the namespace of type Type
// of container Target.
type joinEntry struct {
	ID     string                   `json:"id"`
	Type   specs.LinuxNamespaceType `json:"type"`
	Target string                   `json:"target"`
}

type joinRecord struct {
	Joins []joinEntry `json:"joins"`
}

// joinsFile and joinsLock are the record of joins under the state
// directory and its lock.
const (
	joinsFile = "joins.json"
	joinsLock = "joins.lock"
)

// withJoins runs fn on the record of joins under its lock, and saves it
// when fn reports a change.
func (r *Runtime) withJoins(fn func(*joinRecord) (changed bool, err error)) error {
	unlock, err := fsutil.Lock(filepath.Join(r.stateDir, joinsLock))
	if err != nil {
		return err
	}
	defer unlock()
	path := filepath.Join(r.stateDir, joinsFile)
	rec := &joinRecord{}
	if err := fsutil.ReadJSON(path, rec); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("record of joined namespaces: %w", err)
	}
	changed, err := fn(rec)
	if err != nil || !changed {
		return err
	}
	return fsutil.WriteJSON(path, rec)
}

// holdJoins checks the containers join names and records that id shares
// their namespaces, so that none of them is deleted before id is. The
// caller holds id's owner lock, and id has no container. It returns the
// Info of each container joined, by ID.
func (r *Runtime) holdJoins(ctx context.Context, id string, join map[specs.LinuxNamespaceType]string) (map[string]*Info, error) {
	targets := map[string]*Info{}
	err := r.withJoins(func(rec *joinRecord) (bool, error) {
		for _, t := range joinTypes(join) {
			x := join[t]
			info, ok := targets[x]
			if !ok {
				var err error
				if info, err = r.joinTarget(ctx, x); err != nil {
					return false, fmt.Errorf("join %s: %w", t, err)
				}
				targets[x] = info
			}
			if err := r.checkJoinable(x, info, t); err != nil {
				return false, fmt.Errorf("join %s: %w", t, err)
			}
		}
		// Entries of id are a crashed create's: id has no container.
		rec.Joins = slices.DeleteFunc(rec.Joins, func(e joinEntry) bool { return e.ID == id })
		for _, t := range joinTypes(join) {
			rec.Joins = append(rec.Joins, joinEntry{ID: id, Type: t, Target: join[t]})
		}
		return true, nil
	})
	return targets, err
}

// joinTarget returns the Info of container x, which a create is about to
// join, if x lives and nobody is creating, deleting or changing it now:
// its owner lock is taken without waiting while it is looked at. A delete
// of x that starts afterwards checks the record of joins (refuseJoined),
// which the caller, under the record's lock, has written by then.
func (r *Runtime) joinTarget(ctx context.Context, x string) (*Info, error) {
	release, err := r.volumes.TryLockOwner(x)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return nil, fmt.Errorf("container %q is being created, deleted or changed; try again: %w", x, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return nil, err
	}
	defer release()
	info, err := r.d.State(ctx, x)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("container %q: %w", x, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("container %q: %w", x, err)
	}
	switch info.Status {
	case StatusCreated, StatusRunning, StatusPaused:
	default:
		return nil, fmt.Errorf("container %q is %s: only the namespaces of a created or running container can be shared: %w", x, info.Status, errdefs.ErrFailedPrecondition)
	}
	if info.Spec == nil || info.Spec.Linux == nil {
		return nil, fmt.Errorf("container %q: its spec is unknown: %w", x, errdefs.ErrFailedPrecondition)
	}
	return info, nil
}

// checkJoinable refuses joining x's namespace of type t where the policy
// would refuse what x holds there: the host's namespace, or one x joined
// by path. x may have been created under another policy (another process
// on the same state directory); joining it must not reach further than a
// spec of this runtime could.
func (r *Runtime) checkJoinable(x string, info *Info, t specs.LinuxNamespaceType) error {
	i := slices.IndexFunc(info.Spec.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == t })
	switch {
	case i < 0 && t == specs.UserNamespace:
		return fmt.Errorf("container %q has no user namespace of its own (it shares the host's): %w", x, errdefs.ErrFailedPrecondition)
	case i < 0 && !hostNamespaceAdmitted(r.security, t):
		return fmt.Errorf("container %q shares the host's %s namespace, which this runtime's policy refuses (only under the AllowHostNamespaces or AllowPrivileged policy switch): %w", x, t, errdefs.ErrPermissionDenied)
	case i >= 0 && info.Spec.Linux.Namespaces[i].Path != "" && !r.security.AllowPrivileged:
		return fmt.Errorf("container %q joined its %s namespace at %s (only under the AllowPrivileged policy switch): %w", x, t, info.Spec.Linux.Namespaces[i].Path, errdefs.ErrPermissionDenied)
	}
	return nil
}

// joinUserNamespace gives spec the user namespace and ID mappings of
// container x, and records in the host's pool that id holds x's block
// too: the block goes back to the pool once neither holds it.
func (r *Runtime) joinUserNamespace(id string, spec *specs.Spec, x string, info *Info) (IDRange, error) {
	l := info.Spec.Linux
	if len(l.UIDMappings) == 0 || len(l.GIDMappings) == 0 {
		return IDRange{}, fmt.Errorf("join user: container %q has no ID mappings: %w", x, errdefs.ErrFailedPrecondition)
	}
	spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
	spec.Linux.UIDMappings = slices.Clone(l.UIDMappings)
	spec.Linux.GIDMappings = slices.Clone(l.GIDMappings)
	if r.caps.UserNamespaceShared {
		return IDRange{}, nil // the engine's one mapping, no block
	}
	rng, err := r.ids.share(id, x)
	if err != nil {
		return IDRange{}, fmt.Errorf("join user: %w", err)
	}
	want := []specs.LinuxIDMapping{{ContainerID: 0, HostID: rng.HostID, Size: rng.Size}}
	if !slices.Equal(l.UIDMappings, want) || !slices.Equal(l.GIDMappings, want) {
		_ = r.ids.release(id)
		return IDRange{}, fmt.Errorf("join user: container %q's ID mappings are not the block the pool holds for it: %w", x, errdefs.ErrFailedPrecondition)
	}
	return rng, nil
}

// releaseJoins drops the joins id recorded (it is deleted, or its create
// failed).
func (r *Runtime) releaseJoins(id string) error {
	return r.withJoins(func(rec *joinRecord) (bool, error) {
		n := len(rec.Joins)
		rec.Joins = slices.DeleteFunc(rec.Joins, func(e joinEntry) bool { return e.ID == id })
		return len(rec.Joins) != n, nil
	})
}

// refuseJoined fails with failed-precondition, naming them, while
// containers that joined x's namespaces exist or are being created.
// Entries of creates that crashed are dropped.
func (r *Runtime) refuseJoined(ctx context.Context, x string) error {
	live := r.ownerLive(ctx)
	var joiners []string
	err := r.withJoins(func(rec *joinRecord) (bool, error) {
		n := len(rec.Joins)
		rec.Joins = slices.DeleteFunc(rec.Joins, func(e joinEntry) bool {
			if e.Target != x {
				return false
			}
			if live(e.ID) {
				joiners = append(joiners, e.ID)
				return false
			}
			return true
		})
		return len(rec.Joins) != n, nil
	})
	if err != nil {
		return wrap(x, err)
	}
	if len(joiners) == 0 {
		return nil
	}
	slices.Sort(joiners)
	joiners = slices.Compact(joiners)
	quoted := make([]string, len(joiners))
	for i, j := range joiners {
		quoted[i] = fmt.Sprintf("%q", j)
	}
	return fmt.Errorf("container %q: containers %s share its namespaces: delete them first: %w", x, strings.Join(quoted, ", "), errdefs.ErrFailedPrecondition)
}

// OpenNamespace opens the container's namespace of type typ (network, ipc,
// uts, pid, user, mount, cgroup or time) as its init was created with it;
// the container must be created, running or paused. The file names that
// namespace for as long as it is open, whatever becomes of the container:
// never another process's, even one that takes the init's pid after it
// exits (CNI plugins take /proc/<pid>/fd/<fd> of the caller's descriptor
// as a network namespace's path). It is the caller's to close. Backends
// without Capabilities.NamespaceFiles answer not-implemented.
func (c *Container) OpenNamespace(ctx context.Context, typ specs.LinuxNamespaceType) (*os.File, error) {
	f, _, err := c.openNamespace(ctx, typ)
	return f, err
}

// NamespacePath returns the path of the container's namespace of type typ,
// /proc/<pid>/ns/<name> of its init, created, running or paused, for tools
// that take a path: the CNI plugins that set up the network of a pod's
// infra container, nsenter. The path names the namespace the init was
// created with while the init lives, and nothing else's: once the init
// has exited, a process that takes its pid is reached there instead.
// Callers that keep the path past the container's life hold
// OpenNamespace's file instead. Backends without
// Capabilities.NamespaceFiles answer not-implemented.
func (c *Container) NamespacePath(ctx context.Context, typ specs.LinuxNamespaceType) (string, error) {
	f, path, err := c.openNamespace(ctx, typ)
	if err != nil {
		return "", err
	}
	f.Close()
	return path, nil
}

func (c *Container) openNamespace(ctx context.Context, typ specs.LinuxNamespaceType) (*os.File, string, error) {
	if err := c.capable("namespace files", c.r.ns != nil); err != nil {
		return nil, "", err
	}
	if !slices.Contains(namespaceTypes, typ) {
		return nil, "", fmt.Errorf("container %q: unknown namespace type %q: %w", c.id, typ, errdefs.ErrInvalidArgument)
	}
	if _, err := c.require(ctx, "open a namespace of", StatusCreated, StatusRunning, StatusPaused); err != nil {
		return nil, "", err
	}
	f, path, err := c.r.ns.OpenNamespace(ctx, c.id, typ)
	if err != nil {
		return nil, "", wrap(c.id, err)
	}
	return f, path, nil
}

// cloneJoin copies a Config.Join for the backend's request.
func cloneJoin(join map[specs.LinuxNamespaceType]string) map[specs.LinuxNamespaceType]string {
	if len(join) == 0 {
		return nil
	}
	return maps.Clone(join)
}
