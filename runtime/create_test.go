package runtime

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime/driver"
	"github.com/berthrun/berth/volume"
)

// fakeDriver is the part of a backend Create needs; anything else panics
// (the embedded nil interface).
type fakeDriver struct {
	driver.Runtime
	mu        sync.Mutex
	created   map[string]*driver.CreateRequest
	createErr error
	// bindsAtCreate is the engine's Capabilities.BindsAtCreate.
	bindsAtCreate bool
}

func (f *fakeDriver) Name() string { return "fake" }

func (f *fakeDriver) Capabilities() driver.Capabilities {
	return driver.Capabilities{UserNamespace: true, RawBlock: true, BindsAtCreate: f.bindsAtCreate}
}

func (f *fakeDriver) State(ctx context.Context, id string) (*driver.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if req, ok := f.created[id]; ok {
		return &driver.Info{ID: id, Status: driver.StatusCreated, Spec: req.Spec}, nil
	}
	return nil, errdefs.ErrNotFound
}

func (f *fakeDriver) Create(ctx context.Context, req *driver.CreateRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.createErr != nil {
		return f.createErr
	}
	f.created[req.ID] = req
	return nil
}

func newFakeRuntime(t *testing.T) (*Runtime, *fakeDriver, string) {
	dir := t.TempDir()
	f := &fakeDriver{created: map[string]*driver.CreateRequest{}}
	rt, err := New(f, WithStateDir(dir), WithIDPool(IDPool{Start: 100000, BlockSize: 65536, Count: 4}), withIDDir(t.TempDir()))
	require.NoError(t, err)
	return rt, f, dir
}

// A failed create gives back what it took: the ID block, the volumes.
func TestCreateRollsBack(t *testing.T) {
	rt, f, dir := newFakeRuntime(t)
	ctx := context.Background()
	f.createErr = errors.New("engine said no")
	cfg := &Config{Spec: DefaultSpec(t.TempDir(), "/bin/true"), UserNamespace: true,
		Volumes: []volume.Spec{{Destination: "/scratch", TmpfsSize: 1 << 20}}}
	_, err := rt.Create(ctx, "c1", cfg)
	require.True(t, errdefs.IsUnknown(err), "%v", err)
	require.Contains(t, err.Error(), `"c1"`)
	rec, err := os.ReadFile(filepath.Join(rt.ids.dir, "blocks.json"))
	require.NoError(t, err)
	require.JSONEq(t, `{"blocks":[]}`, string(rec), "the ID block went back to the pool")
	ents, err := os.ReadDir(filepath.Join(dir, "volumes", "records"))
	require.NoError(t, err)
	require.Empty(t, ents, "the volume was detached")

	f.createErr = nil
	c, err := rt.Create(ctx, "c1", cfg)
	require.NoError(t, err)
	info, err := c.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint32(100000), info.Spec.Linux.UIDMappings[0].HostID)
	_, err = rt.Create(ctx, "c1", cfg)
	require.True(t, errdefs.IsAlreadyExists(err))
}

// The caller's spec is never changed: one config can make many containers.
func TestCreateLeavesTheSpecAlone(t *testing.T) {
	rt, _, _ := newFakeRuntime(t)
	spec := DefaultSpec(t.TempDir(), "/bin/true")
	cfg := &Config{Spec: spec, UserNamespace: true}
	for _, id := range []string{"a", "b"} {
		_, err := rt.Create(context.Background(), id, cfg)
		require.NoError(t, err)
	}
	require.Equal(t, DefaultSpec(spec.Root.Path, "/bin/true"), spec)
}

func TestSpecCannotMountDevices(t *testing.T) {
	fixture.RequireRoot(t) // binds become mounts of berth's
	rt, _, _ := newFakeRuntime(t)
	ctx := context.Background()
	devs, err := filepath.Glob("/dev/loop[0-9]*")
	require.NoError(t, err)
	for name, mutate := range map[string]func(*specs.Spec){
		"ext4 mount": func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/data", Type: "ext4", Source: "/dev/vdb"})
		},
		"overlay": func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/o", Type: "overlay", Source: "overlay"})
		},
		"block device": func(s *specs.Spec) {
			s.Linux.Devices = append(s.Linux.Devices, specs.LinuxDevice{Path: "/dev/vdb", Type: "b", Major: 7})
		},
		"allow all": func(s *specs.Spec) {
			s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{Allow: true, Access: "rwm"})
		},
		"bind of a block node": func(s *specs.Spec) {
			if len(devs) > 0 {
				s.Mounts = append(s.Mounts, specs.Mount{Destination: "/dev/x", Type: "bind", Source: devs[0], Options: []string{"bind"}})
			} else {
				s.Linux.Devices = append(s.Linux.Devices, specs.LinuxDevice{Path: "/dev/x", Type: "b"})
			}
		},
	} {
		spec := DefaultSpec(t.TempDir(), "/bin/true")
		mutate(spec)
		_, err := rt.Create(ctx, "x", &Config{Spec: spec})
		require.Truef(t, errdefs.IsInvalidArgument(err), "%s: %v", name, err)
	}
	spec := DefaultSpec(t.TempDir(), "/bin/true")
	spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/share", Type: "bind", Source: t.TempDir(), Options: []string{"rbind", "ro"}})
	_, err = rt.Create(ctx, "ok", &Config{Spec: spec})
	require.NoError(t, err, "a bind of a directory is fine")
	require.NoError(t, rt.volumes.DetachAll(ctx, "ok"))
}

func TestImageConfigFillsTheProcess(t *testing.T) {
	spec := DefaultSpec("", "arg")
	spec.Process.Env = append(spec.Process.Env, "MINE=1", "SHARED=caller")
	err := completeProcess(spec, ocispec.ImageConfig{Entrypoint: []string{"/entry"}, Cmd: []string{"default"},
		Env: []string{"SHARED=image", "IMAGE=1"}, WorkingDir: "/work", User: "1000:1001"}, "img")
	require.NoError(t, err)
	require.Equal(t, []string{"/entry", "arg"}, spec.Process.Args)
	require.Equal(t, "/work", spec.Process.Cwd)
	require.Equal(t, specs.User{UID: 1000, GID: 1001}, spec.Process.User)
	require.Contains(t, spec.Process.Env, "SHARED=caller")
	require.Contains(t, spec.Process.Env, "IMAGE=1")
	require.NotContains(t, spec.Process.Env, "SHARED=image")

	spec = DefaultSpec("")
	require.NoError(t, completeProcess(spec, ocispec.ImageConfig{Cmd: []string{"/bin/sh"}}, "img"))
	require.Equal(t, []string{"/bin/sh"}, spec.Process.Args)
	spec = DefaultSpec("")
	require.True(t, errdefs.IsInvalidArgument(completeProcess(spec, ocispec.ImageConfig{}, "img")))
	spec = DefaultSpec("", "x")
	require.True(t, errdefs.IsNotImplemented(completeProcess(spec, ocispec.ImageConfig{User: "nobody"}, "img")))
}

// withIDDir keeps a test's ID blocks out of the host's record.
func withIDDir(dir string) Option {
	return func(o *options) error {
		o.idDir = dir
		return nil
	}
}

// A spec's bind reaches the backend as berth's own mount of the opened
// source, nosuid and nodev: never as a path that could be swapped between
// the check and the engine's mount. Sockets and devices are not bound.
func TestSpecBindsGoThroughTheVolumeManager(t *testing.T) {
	fixture.RequireRoot(t)
	rt, f, dir := newFakeRuntime(t)
	ctx := context.Background()
	share := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(share, "marker"), []byte("share"), 0o644))
	file := filepath.Join(t.TempDir(), "resolv.conf")
	require.NoError(t, os.WriteFile(file, []byte("nameserver 127.0.0.1\n"), 0o644))
	spec := DefaultSpec(t.TempDir(), "/bin/true")
	spec.Mounts = append(spec.Mounts,
		specs.Mount{Destination: "/share", Type: "bind", Source: share, Options: []string{"rbind", "ro", "rw"}},
		specs.Mount{Destination: "/etc/resolv.conf", Type: "bind", Source: file, Options: []string{"bind", "ro"}})
	_, err := rt.Create(ctx, "c1", &Config{Spec: spec})
	require.NoError(t, err)
	t.Cleanup(func() { _ = rt.volumes.DetachAll(ctx, "c1") })
	got := f.created["c1"].Spec.Mounts
	for _, m := range got[len(got)-2:] {
		require.True(t, strings.HasPrefix(m.Source, filepath.Join(dir, "volumes", "mnt")+"/"), "%s is bound from %s", m.Destination, m.Source)
		require.Subset(t, m.Options, []string{"nosuid", "nodev"})
		ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(m.Source))
		require.NoError(t, err)
		require.Len(t, ms, 1)
		require.Subset(t, strings.Split(ms[0].Options, ","), []string{"nosuid", "nodev"})
	}
	b, err := os.ReadFile(filepath.Join(got[len(got)-2].Source, "marker"))
	require.NoError(t, err)
	require.Equal(t, "share", string(b))
	b, err = os.ReadFile(got[len(got)-1].Source)
	require.NoError(t, err)
	require.Equal(t, "nameserver 127.0.0.1\n", string(b))

	sock := filepath.Join(t.TempDir(), "ctl.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	defer l.Close()
	spec = DefaultSpec(t.TempDir(), "/bin/true")
	spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/run/ctl.sock", Type: "bind", Source: sock, Options: []string{"bind"}})
	_, err = rt.Create(ctx, "c2", &Config{Spec: spec})
	require.Truef(t, errdefs.IsInvalidArgument(err), "a socket: %v", err)
}

// The log's caps reach the backend, the defaults filled in; caps no log
// could keep are refused.
func TestCreateLogLimits(t *testing.T) {
	rt, f, _ := newFakeRuntime(t)
	ctx := context.Background()
	_, err := rt.Create(ctx, "dflt", &Config{Spec: DefaultSpec(t.TempDir(), "/bin/true")})
	require.NoError(t, err)
	require.Equal(t, driver.LogLimits{MaxSize: DefaultLogMaxSize, MaxFiles: DefaultLogMaxFiles}, f.created["dflt"].Log)
	_, err = rt.Create(ctx, "mine", &Config{Spec: DefaultSpec(t.TempDir(), "/bin/true"), Log: LogLimits{MaxSize: 1 << 16}})
	require.NoError(t, err)
	require.Equal(t, driver.LogLimits{MaxSize: 1 << 16, MaxFiles: DefaultLogMaxFiles}, f.created["mine"].Log)
	for _, l := range []LogLimits{{MaxSize: -1}, {MaxSize: 100}, {MaxFiles: -1}, {MaxFiles: 1000}} {
		_, err = rt.Create(ctx, "bad", &Config{Spec: DefaultSpec(t.TempDir(), "/bin/true"), Log: l})
		require.True(t, errdefs.IsInvalidArgument(err), "%+v: %v", l, err)
	}
}
