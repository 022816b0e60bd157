package runtime

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime/driver"
	"github.com/berthrun/berth/volume"
)

// sharedDir returns a directory that is a shared mount of its own, with a
// tmpfs mounted at sub, as the kubelet's host paths are; the test's
// cleanup detaches both, private first so that nothing propagates.
func sharedDir(t *testing.T) (dir, sub string) {
	t.Helper()
	dir = fixture.TempDir(t)
	require.NoError(t, unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""))
	t.Cleanup(func() {
		_ = unix.Mount("", dir, "", unix.MS_PRIVATE|unix.MS_REC, "")
		_ = unix.Unmount(dir, unix.MNT_DETACH)
	})
	require.NoError(t, unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, ""))
	sub = filepath.Join(dir, "sub")
	require.NoError(t, os.Mkdir(sub, 0o755))
	require.NoError(t, unix.Mount("tmpfs", sub, "tmpfs", 0, "size=1m"))
	return dir, sub
}

func mountAt(t *testing.T, path string) *mountinfo.Info {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(path))
	require.NoError(t, err)
	require.Len(t, ms, 1, "%s is not a mount point", path)
	return ms[0]
}

func canWrite(dir string) error {
	return os.WriteFile(filepath.Join(dir, "probe"), []byte("x"), 0o644)
}

// A spec's bind keeps its OCI meaning through the volume manager: "ro" is
// read-only at the bind alone, the mounts under its source keep their
// access (Kubernetes' default); "rro" is read-only all the way down;
// rslave and rshared make berth's mount of the source a slave or a peer
// of the source's. The engine gets the caller's options (it applies the
// propagation to its own bind), with nosuid and nodev.
func TestSpecBindPropagationAndReadOnly(t *testing.T) {
	fixture.RequireRoot(t)
	ctx := context.Background()
	dir := t.TempDir()
	f := &fakeDriver{created: map[string]*driver.CreateRequest{}}
	rt, err := New(f, WithStateDir(dir), WithSecurityPolicy(SecurityPolicy{AllowPrivileged: true}))
	require.NoError(t, err)
	share, sub := sharedDir(t)
	spec := DefaultSpec(t.TempDir(), "/bin/true")
	binds := map[string][]string{
		"/ro": {"rbind", "ro"}, "/rro": {"rbind", "rro"}, "/rw": {"rbind", "rprivate"},
		"/slave": {"rbind", "rslave", "ro"}, "/shared": {"rbind", "rshared"},
	}
	for _, dst := range slices.Sorted(maps.Keys(binds)) {
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: dst, Type: "bind", Source: share, Options: binds[dst]})
	}
	c, err := rt.Create(ctx, "c1", &Config{Spec: spec})
	require.NoError(t, err)
	t.Cleanup(func() { _ = rt.volumes.DetachAll(ctx, "c1") })
	group := strings.TrimPrefix(mountAt(t, share).Optional, "shared:")
	got := map[string]specs.Mount{}
	for _, m := range f.created["c1"].Spec.Mounts {
		if binds[m.Destination] != nil {
			got[m.Destination] = m
			require.Equal(t, append(slices.Clone(binds[m.Destination]), "nosuid", "nodev"), m.Options, "%s: the caller's options, confined", m.Destination)
		}
	}
	require.Len(t, got, len(binds))
	require.ErrorIs(t, canWrite(got["/ro"].Source), unix.EROFS)
	require.NoError(t, canWrite(filepath.Join(got["/ro"].Source, "sub")), `"ro" is not recursive`)
	require.ErrorIs(t, canWrite(got["/rro"].Source), unix.EROFS)
	require.ErrorIs(t, canWrite(filepath.Join(got["/rro"].Source, "sub")), unix.EROFS, `"rro" is`)
	require.NoError(t, canWrite(got["/rw"].Source))
	require.Empty(t, mountAt(t, got["/rw"].Source).Optional, "private")
	require.Equal(t, "master:"+group, mountAt(t, got["/slave"].Source).Optional)
	require.Equal(t, "shared:"+group, mountAt(t, got["/shared"].Source).Optional)

	vols, err := c.Volumes(ctx)
	require.NoError(t, err)
	byDst := map[string]volume.Spec{}
	for _, v := range vols {
		byDst[v.Destination] = v
	}
	require.True(t, byDst["/ro"].ReadOnly && byDst["/ro"].NonRecursiveReadOnly)
	require.True(t, byDst["/rro"].ReadOnly && !byDst["/rro"].NonRecursiveReadOnly)
	require.Equal(t, volume.PropagationSlave, byDst["/slave"].Propagation)
	require.Equal(t, volume.PropagationShared, byDst["/shared"].Propagation)

	require.NoError(t, rt.volumes.DetachAll(ctx, "c1"))
	require.NoError(t, unix.Unmount(sub, 0), "the host's submount is its own")
	require.NoError(t, os.Remove(sub))
}

// Shared propagation carries what a container mounts under its bind to
// the host, with the flags it chose: only under AllowPrivileged, for a
// spec's bind as for a volume (permission-denied, nothing left behind).
// It needs the container's root filesystem shared too (the engine makes
// it so when the spec leaves it unset): any other choice is refused.
// Slave propagation needs no switch.
func TestSharedPropagationNeedsAllowPrivileged(t *testing.T) {
	fixture.RequireRoot(t)
	ctx := context.Background()
	rt, _, dir := newFakeRuntime(t)
	share, _ := sharedDir(t)
	shared := func(opts ...string) *Config {
		spec := DefaultSpec(t.TempDir(), "/bin/true")
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/share", Type: "bind", Source: share, Options: append([]string{"rbind"}, opts...)})
		return &Config{Spec: spec}
	}
	nothingLeft := func() {
		t.Helper()
		ents, err := os.ReadDir(filepath.Join(dir, "volumes", "records"))
		require.NoError(t, err)
		require.Empty(t, ents)
		ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
		require.NoError(t, err)
		require.Empty(t, ms)
	}
	for name, cfg := range map[string]*Config{
		"rshared bind": shared("rshared"),
		"shared bind":  shared("rslave", "shared"),
		"shared volume": {Spec: DefaultSpec(t.TempDir(), "/bin/true"),
			Volumes: []volume.Spec{{Source: share, Destination: "/share", Propagation: volume.PropagationShared}}},
	} {
		_, err := rt.Create(ctx, "c1", cfg)
		require.Truef(t, errdefs.IsPermissionDenied(err), "%s: %v", name, err)
		require.Contains(t, err.Error(), "AllowPrivileged")
		nothingLeft()
	}
	_, err := rt.Create(ctx, "c1", shared("rslave"))
	require.NoError(t, err, "slave propagation is the host's to give")
	require.NoError(t, rt.volumes.DetachAll(ctx, "c1"))
	nothingLeft()

	priv, f, pdir := newFakeRuntime(t)
	priv.security = SecurityPolicy{AllowPrivileged: true}
	cfg := shared("rshared")
	cfg.Spec.Linux.RootfsPropagation = "rslave"
	_, err = priv.Create(ctx, "c2", cfg)
	require.Truef(t, errdefs.IsInvalidArgument(err), "a shared bind in a root filesystem that is not: %v", err)
	_, err = priv.Create(ctx, "c2", shared("rshared"))
	require.NoError(t, err)
	require.Empty(t, f.created["c2"].Spec.Linux.RootfsPropagation, "the engine chooses")
	require.NoError(t, priv.volumes.DetachAll(ctx, "c2"))
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(pdir))
	require.NoError(t, err)
	require.Empty(t, ms)
}

// On an engine that binds a container's binds at create and never again
// (BindsAtCreate), the runtime takes its own mounts of the bind sources
// off the host once the container is created: the host can then remove a
// directory it mounted something on under a source while the container
// lives. The attachments stay the container's until it is deleted.
func TestBindsReleasedAfterCreate(t *testing.T) {
	fixture.RequireRoot(t)
	ctx := context.Background()
	dir := t.TempDir()
	f := &fakeDriver{created: map[string]*driver.CreateRequest{}, bindsAtCreate: true}
	rt, err := New(f, WithStateDir(dir))
	require.NoError(t, err)
	share, sub := sharedDir(t)
	spec := DefaultSpec(t.TempDir(), "/bin/true")
	spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/share", Type: "bind", Source: share, Options: []string{"rbind", "ro"}})
	c, err := rt.Create(ctx, "c1", &Config{Spec: spec, Volumes: []volume.Spec{{Destination: "/scratch", TmpfsSize: 1 << 20}}})
	require.NoError(t, err)
	src := f.created["c1"].Spec.Mounts[len(spec.Mounts)-1].Source
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(src))
	require.NoError(t, err)
	require.Empty(t, ms, "berth's mount of %s is off the host", share)
	require.NoError(t, unix.Unmount(sub, 0))
	require.NoError(t, os.Remove(sub), "the host removes its submount's directory")
	vols, err := c.Volumes(ctx)
	require.NoError(t, err)
	require.Len(t, vols, 2)
	require.NoError(t, rt.volumes.DetachAll(ctx, "c1"))
	ents, err := os.ReadDir(filepath.Join(dir, "volumes", "records"))
	require.NoError(t, err)
	require.Empty(t, ents)
}

// What a spec's bind options ask of the volume manager.
func TestBindVolumeSpec(t *testing.T) {
	for opts, want := range map[string]volume.Spec{
		"rbind":                {},
		"rbind,ro":             {ReadOnly: true, NonRecursiveReadOnly: true},
		"rbind,rro":            {ReadOnly: true},
		"rbind,rro,rw":         {ReadOnly: true},
		"rbind,ro,rw":          {},
		"rbind,ro,rro":         {ReadOnly: true},
		"rbind,rro,rrw,ro":     {ReadOnly: true, NonRecursiveReadOnly: true},
		"bind,slave":           {Propagation: volume.PropagationSlave},
		"rbind,rshared,rslave": {Propagation: volume.PropagationSlave},
		"rbind,rprivate":       {Propagation: volume.PropagationPrivate},
		"rbind,shared":         {Propagation: volume.PropagationShared},
	} {
		require.Equal(t, want, bindVolumeSpec(specs.Mount{Options: strings.Split(opts, ",")}), opts)
	}
}
