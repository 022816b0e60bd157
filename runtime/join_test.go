package runtime

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/runtime/driver"
)

// joinDriver is a fake backend whose containers can be joined, stopped and
// deleted.
type joinDriver struct {
	fakeDriver
	stopped map[string]bool
}

func (d *joinDriver) Capabilities() driver.Capabilities {
	return driver.Capabilities{UserNamespace: true, RawBlock: true, JoinNamespaces: true}
}

func (d *joinDriver) State(ctx context.Context, id string) (*driver.Info, error) {
	info, err := d.fakeDriver.State(ctx, id)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil && d.stopped[id] {
		info.Status = driver.StatusStopped
	}
	return info, err
}

func (d *joinDriver) Delete(ctx context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.created, id)
	return nil
}

func (d *joinDriver) stop(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopped[id] = true
}

// newJoinRuntime opens a runtime on d (a new fake backend whose containers
// can be joined when nil) with its own ID record (ids) and state
// directory.
func newJoinRuntime(t *testing.T, state, ids string, p SecurityPolicy, d *joinDriver) (*Runtime, *joinDriver) {
	if d == nil {
		d = &joinDriver{fakeDriver: fakeDriver{created: map[string]*driver.CreateRequest{}}, stopped: map[string]bool{}}
	}
	rt, err := New(d, WithStateDir(state), WithIDPool(IDPool{Start: 100000, BlockSize: 65536, Count: 4}), withIDDir(ids), WithSecurityPolicy(p))
	require.NoError(t, err)
	return rt, d
}

// blocksOf returns the ID blocks the record holds for id.
func blocksOf(t *testing.T, rt *Runtime, id string) []IDRange {
	t.Helper()
	rec, err := rt.ids.load()
	require.NoError(t, err)
	var out []IDRange
	for _, b := range rec.Blocks {
		if b.ID == id {
			out = append(out, b.IDRange)
		}
	}
	return out
}

// joinsOf returns the joins recorded for id.
func joinsOf(t *testing.T, rt *Runtime, id string) []joinEntry {
	t.Helper()
	var out []joinEntry
	require.NoError(t, rt.withJoins(func(rec *joinRecord) (bool, error) {
		for _, e := range rec.Joins {
			if e.ID == id {
				out = append(out, e)
			}
		}
		return false, nil
	}))
	return out
}

func joinSpec(t *testing.T) *specs.Spec {
	s := DefaultSpec(t.TempDir(), "/bin/true")
	s.Hostname = ""
	return s
}

// Each way a join can be wrong is refused with its class, naming what is
// wrong, before anything is taken.
func TestJoinRefusals(t *testing.T) {
	rt, d := newJoinRuntime(t, t.TempDir(), t.TempDir(), SecurityPolicy{}, nil)
	ctx := context.Background()
	_, err := rt.Create(ctx, "plain", &Config{Spec: joinSpec(t)})
	require.NoError(t, err)
	_, err = rt.Create(ctx, "infra", &Config{Spec: joinSpec(t), UserNamespace: true})
	require.NoError(t, err)
	_, err = rt.Create(ctx, "gone", &Config{Spec: joinSpec(t)})
	require.NoError(t, err)
	d.stop("gone")
	type join = map[specs.LinuxNamespaceType]string
	for name, tc := range map[string]struct {
		join   join
		mutate func(*Config)
		class  func(error) bool
		names  string
	}{
		"mount":                  {join{specs.MountNamespace: "infra"}, nil, errdefs.IsInvalidArgument, "mount"},
		"cgroup":                 {join{specs.CgroupNamespace: "infra"}, nil, errdefs.IsInvalidArgument, "cgroup"},
		"time":                   {join{specs.TimeNamespace: "infra"}, nil, errdefs.IsInvalidArgument, "time"},
		"unknown type":           {join{"bogus": "infra"}, nil, errdefs.IsInvalidArgument, "bogus"},
		"itself":                 {join{specs.NetworkNamespace: "j"}, nil, errdefs.IsInvalidArgument, "itself"},
		"bad ID":                 {join{specs.NetworkNamespace: "../infra"}, nil, errdefs.IsInvalidArgument, "../infra"},
		"user and UserNamespace": {join{specs.UserNamespace: "infra"}, func(c *Config) { c.UserNamespace = true }, errdefs.IsInvalidArgument, "UserNamespace"},
		"uts with a hostname":    {join{specs.UTSNamespace: "infra"}, func(c *Config) { c.Spec.Hostname = "mine" }, errdefs.IsInvalidArgument, "hostname"},
		"path in the spec": {join{specs.NetworkNamespace: "infra"}, func(c *Config) {
			for i, ns := range c.Spec.Linux.Namespaces {
				if ns.Type == specs.NetworkNamespace {
					c.Spec.Linux.Namespaces[i].Path = "/proc/1/ns/net"
				}
			}
		}, errdefs.IsInvalidArgument, "/proc/1/ns/net"},
		"unknown container":       {join{specs.NetworkNamespace: "nobody"}, nil, errdefs.IsNotFound, `"nobody"`},
		"stopped container":       {join{specs.IPCNamespace: "gone"}, nil, errdefs.IsFailedPrecondition, `"gone"`},
		"user of one without":     {join{specs.UserNamespace: "plain"}, nil, errdefs.IsFailedPrecondition, `"plain"`},
		"one good, one unknown":   {join{specs.NetworkNamespace: "infra", specs.PIDNamespace: "nobody"}, nil, errdefs.IsNotFound, `"nobody"`},
		"user good, network gone": {join{specs.UserNamespace: "infra", specs.NetworkNamespace: "gone"}, nil, errdefs.IsFailedPrecondition, `"gone"`},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := &Config{Spec: joinSpec(t), Join: tc.join}
			if tc.mutate != nil {
				tc.mutate(cfg)
			}
			_, err := rt.Create(ctx, "j", cfg)
			require.Truef(t, tc.class(err), "%v", err)
			require.Contains(t, err.Error(), `"j"`)
			require.Contains(t, err.Error(), tc.names)
			_, err = rt.Get(ctx, "j")
			require.True(t, errdefs.IsNotFound(err))
			require.Empty(t, blocksOf(t, rt, "j"), "no ID block held")
			require.Empty(t, joinsOf(t, rt, "j"), "no join recorded")
		})
	}

	// A backend that cannot join refuses before anything else.
	core, _, _ := newFakeRuntime(t)
	_, err = core.Create(ctx, "j", &Config{Spec: joinSpec(t), Join: map[specs.LinuxNamespaceType]string{specs.NetworkNamespace: "x"}})
	require.Truef(t, errdefs.IsNotImplemented(err), "%v", err)
	c, err := core.Create(ctx, "k", &Config{Spec: joinSpec(t)})
	require.NoError(t, err)
	_, err = c.NamespacePath(ctx, specs.NetworkNamespace)
	require.Truef(t, errdefs.IsNotImplemented(err), "%v", err)
	_, err = c.OpenNamespace(ctx, specs.NetworkNamespace)
	require.Truef(t, errdefs.IsNotImplemented(err), "%v", err)
}

// The backend gets the joins by container, the spec listing each joined
// namespace without a path, and the joined user namespace's mappings; the
// joiner holds the block with its owner, which is deleted last.
func TestJoinHoldsTheTarget(t *testing.T) {
	state, ids := t.TempDir(), t.TempDir()
	rt, d := newJoinRuntime(t, state, ids, SecurityPolicy{}, nil)
	ctx := context.Background()
	infra, err := rt.Create(ctx, "infra", &Config{Spec: joinSpec(t), UserNamespace: true})
	require.NoError(t, err)
	own := blocksOf(t, rt, "infra")
	require.Len(t, own, 1)

	spec := joinSpec(t)
	spec.Linux.Namespaces = slices.DeleteFunc(spec.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.NetworkNamespace })
	join := map[specs.LinuxNamespaceType]string{specs.NetworkNamespace: "infra", specs.UserNamespace: "infra", specs.PIDNamespace: "infra"}
	a, err := rt.Create(ctx, "a", &Config{Spec: spec, Join: join})
	require.NoError(t, err)
	b, err := rt.Create(ctx, "b", &Config{Spec: joinSpec(t), Join: map[specs.LinuxNamespaceType]string{specs.UserNamespace: "infra"}})
	require.NoError(t, err)

	req := d.created["a"]
	require.Equal(t, join, req.Join)
	join[specs.IPCNamespace] = "infra"
	require.NotContains(t, req.Join, specs.IPCNamespace, "the backend's copy is its own")
	for _, typ := range []specs.LinuxNamespaceType{specs.NetworkNamespace, specs.UserNamespace, specs.PIDNamespace} {
		i := slices.IndexFunc(req.Spec.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == typ })
		require.GreaterOrEqualf(t, i, 0, "the spec lists %s", typ)
		require.Empty(t, req.Spec.Linux.Namespaces[i].Path)
	}
	want := []specs.LinuxIDMapping{{HostID: own[0].HostID, Size: own[0].Size}}
	require.Equal(t, want, req.Spec.Linux.UIDMappings)
	require.Equal(t, want, req.Spec.Linux.GIDMappings)
	require.Equal(t, own, blocksOf(t, rt, "a"), "the joiner holds the owner's block")
	require.Equal(t, own, blocksOf(t, rt, "b"))

	// Another process, after a restart, sees the same holds.
	rt2, _ := newJoinRuntime(t, state, ids, SecurityPolicy{}, d)
	for _, force := range []bool{false, true} {
		err = infra.Delete(ctx, DeleteOptions{Force: force})
		require.Truef(t, errdefs.IsFailedPrecondition(err), "%v", err)
		require.Contains(t, err.Error(), `"a", "b"`)
		x, err := rt2.Get(ctx, "infra")
		require.NoError(t, err)
		err = x.Delete(ctx, DeleteOptions{Force: force})
		require.Truef(t, errdefs.IsFailedPrecondition(err), "%v", err)
	}
	_, err = rt.Get(ctx, "infra")
	require.NoError(t, err, "still there")

	// A new container never gets the block while one holder remains.
	require.NoError(t, a.Delete(ctx, DeleteOptions{}))
	require.Equal(t, own, blocksOf(t, rt, "infra"))
	err = infra.Delete(ctx, DeleteOptions{})
	require.Truef(t, errdefs.IsFailedPrecondition(err), "%v", err)
	require.NotContains(t, err.Error(), `"a"`)
	_, err = rt.Create(ctx, "other", &Config{Spec: joinSpec(t), UserNamespace: true})
	require.NoError(t, err)
	require.NotEqual(t, own, blocksOf(t, rt, "other"))
	require.NoError(t, b.Delete(ctx, DeleteOptions{}))
	require.NoError(t, infra.Delete(ctx, DeleteOptions{}))
	require.Empty(t, blocksOf(t, rt, "infra"))
	require.Empty(t, blocksOf(t, rt, "a"))
	require.Empty(t, blocksOf(t, rt, "b"))
	_, err = rt.Create(ctx, "next", &Config{Spec: joinSpec(t), UserNamespace: true})
	require.NoError(t, err)
	require.Equal(t, own, blocksOf(t, rt, "next"), "the block is free once its last holder is gone")
}

// The record of a create that crashed after it recorded its joins does
// not keep its target forever: its owner lock is free and it has no
// container. One being created does (its owner lock is held), and a
// target being created or deleted cannot be joined.
func TestJoinLeftoversAndBusyTargets(t *testing.T) {
	rt, _ := newJoinRuntime(t, t.TempDir(), t.TempDir(), SecurityPolicy{}, nil)
	ctx := context.Background()
	infra, err := rt.Create(ctx, "infra", &Config{Spec: joinSpec(t)})
	require.NoError(t, err)
	require.NoError(t, rt.withJoins(func(rec *joinRecord) (bool, error) {
		rec.Joins = append(rec.Joins, joinEntry{ID: "crashed", Type: specs.NetworkNamespace, Target: "infra"},
			joinEntry{ID: "creating", Type: specs.NetworkNamespace, Target: "infra"})
		return true, nil
	}))
	unlock, err := rt.volumes.LockOwner("creating")
	require.NoError(t, err)
	err = infra.Delete(ctx, DeleteOptions{})
	require.Truef(t, errdefs.IsFailedPrecondition(err), "%v", err)
	require.Contains(t, err.Error(), `"creating"`)
	require.NotContains(t, err.Error(), `"crashed"`)
	unlock()

	unlock, err = rt.volumes.LockOwner("infra")
	require.NoError(t, err)
	_, err = rt.Create(ctx, "j", &Config{Spec: joinSpec(t), Join: map[specs.LinuxNamespaceType]string{specs.NetworkNamespace: "infra"}})
	require.Truef(t, errdefs.IsFailedPrecondition(err), "a target being deleted: %v", err)
	require.Contains(t, err.Error(), "try again")
	unlock()
	require.Empty(t, joinsOf(t, rt, "j"))

	require.NoError(t, infra.Delete(ctx, DeleteOptions{}))
	b, err := os.ReadFile(filepath.Join(rt.stateDir, joinsFile))
	require.NoError(t, err)
	require.JSONEq(t, `{"joins":[]}`, string(b))
}

// Joining a container reaches no further than a spec of the joining
// runtime could: one created elsewhere with the host's network namespace
// is joined only under AllowHostNamespaces.
func TestJoinTargetUnderThePolicy(t *testing.T) {
	state, ids := t.TempDir(), t.TempDir()
	host, d := newJoinRuntime(t, state, ids, SecurityPolicy{AllowHostNamespaces: true}, nil)
	strict, _ := newJoinRuntime(t, state, ids, SecurityPolicy{}, d)
	ctx := context.Background()
	spec := joinSpec(t)
	spec.Linux.Namespaces = slices.DeleteFunc(spec.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.NetworkNamespace })
	_, err := strict.Create(ctx, "hostnet", &Config{Spec: spec})
	require.Truef(t, errdefs.IsPermissionDenied(err), "%v", err)
	_, err = host.Create(ctx, "hostnet", &Config{Spec: spec})
	require.NoError(t, err)

	net := map[specs.LinuxNamespaceType]string{specs.NetworkNamespace: "hostnet"}
	_, err = strict.Create(ctx, "j", &Config{Spec: joinSpec(t), Join: net})
	require.Truef(t, errdefs.IsPermissionDenied(err), "%v", err)
	require.Contains(t, err.Error(), `"hostnet"`)
	require.Empty(t, joinsOf(t, strict, "j"))
	_, err = host.Create(ctx, "j", &Config{Spec: joinSpec(t), Join: net})
	require.NoError(t, err)
	// Its IPC namespace is its own: any policy may join it.
	_, err = strict.Create(ctx, "k", &Config{Spec: joinSpec(t), Join: map[specs.LinuxNamespaceType]string{specs.IPCNamespace: "hostnet"}})
	require.NoError(t, err)
}

func TestIDPoolShare(t *testing.T) {
	a := &idAllocator{pool: IDPool{Start: 100000, BlockSize: 65536, Count: 2}, dir: t.TempDir(), root: t.TempDir()}
	_, err := a.share("j", "nobody")
	require.Truef(t, errdefs.IsFailedPrecondition(err), "%v", err)
	r, err := a.allocate("x", nil)
	require.NoError(t, err)
	_, err = a.allocate("crashed-j", nil)
	require.NoError(t, err)
	s, err := a.share("crashed-j", "x")
	require.NoError(t, err, "a crashed create's own block gives way to the shared one")
	require.Equal(t, r, s)
	other, err := a.allocate("y", nil)
	require.NoError(t, err, "the crashed create's block was given back")
	require.NotEqual(t, r, other)
	require.NoError(t, a.release("x"))
	_, err = a.allocate("z", nil)
	require.Truef(t, errdefs.IsResourceExhausted(err), "the shared block is still held: %v", err)
	require.NoError(t, a.release("crashed-j"))
	got, err := a.allocate("z", nil)
	require.NoError(t, err)
	require.Equal(t, r, got)
}
