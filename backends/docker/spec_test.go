package docker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/runtime"
)

func defaultSpec(args ...string) *specs.Spec {
	return runtime.DefaultSpec("", args...)
}

// berth's default spec is exactly what Docker does by default, spelled out.
func TestTranslateDefaultSpec(t *testing.T) {
	s := defaultSpec("/bin/sh", "-c", "echo hi")
	s.Process.User = specs.User{UID: 1000, GID: 1001, AdditionalGids: []uint32{5, 7}}
	s.Process.Cwd = "/tmp"
	tr := &translation{cgroupns: true}
	require.NoError(t, translate(s, tr))
	c, h := tr.config, tr.host

	assert.Equal(t, []string{"/bin/sh"}, c.Entrypoint, "the image's entrypoint is replaced")
	assert.Equal(t, []string{"-c", "echo hi"}, c.Cmd)
	assert.Equal(t, s.Process.Env, c.Env)
	assert.Equal(t, "/tmp", c.WorkingDir)
	assert.Equal(t, "1000:1001", c.User)
	assert.Equal(t, []string{"5", "7"}, h.GroupAdd)
	assert.Equal(t, "berth", c.Hostname)

	assert.Equal(t, []string{"ALL"}, h.CapDrop)
	assert.Len(t, h.CapAdd, 14)
	assert.Contains(t, h.CapAdd, "CAP_NET_BIND_SERVICE")
	assert.Equal(t, []*container.Ulimit{{Name: "nofile", Soft: 1024, Hard: 1024}}, h.Ulimits)
	assert.Contains(t, h.SecurityOpt, "no-new-privileges:true")
	assert.Equal(t, s.Linux.MaskedPaths, h.MaskedPaths)
	assert.Equal(t, s.Linux.ReadonlyPaths, h.ReadonlyPaths)

	assert.Equal(t, container.NetworkMode("none"), h.NetworkMode, "a private network namespace has only loopback")
	assert.True(t, c.NetworkDisabled)
	assert.Equal(t, container.IPCModePrivate, h.IpcMode)
	assert.Empty(t, h.PidMode)
	assert.Empty(t, h.UTSMode)
	assert.Equal(t, container.CgroupnsModePrivate, h.CgroupnsMode)
	assert.Empty(t, h.UsernsMode)
	assert.Equal(t, int64(64<<20), h.ShmSize, "/dev/shm size")
	require.NotNil(t, h.Init)
	assert.False(t, *h.Init, "the command is PID 1")
	assert.Empty(t, h.Mounts)
	assert.Empty(t, h.DeviceCgroupRules, "the deny-all rule is Docker's own")
}

// A terminal is Docker's Tty; its size goes in the host config, which
// daemons of API 1.42 and later apply before the process starts.
func TestTranslateTerminal(t *testing.T) {
	s := defaultSpec("/bin/sh")
	tr := &translation{cgroupns: true}
	require.NoError(t, translate(s, tr))
	assert.False(t, tr.config.Tty)
	assert.Equal(t, [2]uint{}, tr.host.ConsoleSize)

	s.Process.Terminal = true
	s.Process.ConsoleSize = &specs.Box{Height: 24, Width: 80}
	tr = &translation{cgroupns: true}
	require.NoError(t, translate(s, tr))
	assert.True(t, tr.config.Tty)
	assert.Equal(t, [2]uint{24, 80}, tr.host.ConsoleSize, "height, then width")
}

func TestTranslateNamespacesAndResources(t *testing.T) {
	s := defaultSpec("/bin/true")
	s.Hostname = ""
	s.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.MountNamespace}}
	mem, swap, quota, pids := int64(64<<20), int64(128<<20), int64(50000), int64(10)
	shares, period := uint64(512), uint64(100000)
	s.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &mem}
	s.Linux.Resources.CPU = &specs.LinuxCPU{Shares: &shares, Quota: &quota, Period: &period, Cpus: "0"}
	s.Linux.Resources.Pids = &specs.LinuxPids{Limit: &pids}
	major, minor := int64(1), int64(3)
	s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: &major, Minor: &minor, Access: "rw"})
	tr := &translation{cgroupns: true}
	require.NoError(t, translate(s, tr))
	h := tr.host
	assert.Equal(t, container.NetworkMode("host"), h.NetworkMode)
	assert.Equal(t, container.PidMode("host"), h.PidMode)
	assert.Equal(t, container.IPCModeHost, h.IpcMode)
	assert.Equal(t, container.UTSMode("host"), h.UTSMode)
	assert.Equal(t, container.CgroupnsModeHost, h.CgroupnsMode)
	assert.Equal(t, mem, h.Memory)
	assert.Equal(t, int64(-1), h.MemorySwap, "no swap limit in the spec: unlimited, not Docker's twice the memory")
	assert.Equal(t, int64(512), h.CPUShares)
	assert.Equal(t, quota, h.CPUQuota)
	assert.Equal(t, int64(100000), h.CPUPeriod)
	assert.Equal(t, "0", h.CpusetCpus)
	assert.Equal(t, &pids, h.PidsLimit)
	assert.Equal(t, []string{"c 1:3 rw"}, h.DeviceCgroupRules)

	s.Linux.Resources.Memory.Swap = &swap
	tr = &translation{cgroupns: true}
	require.NoError(t, translate(s, tr))
	assert.Equal(t, swap, tr.host.MemorySwap)
}

func TestTranslateUserNamespace(t *testing.T) {
	remap := &idMapping{UID: []specs.LinuxIDMapping{{HostID: 100000, Size: 65536}}, GID: []specs.LinuxIDMapping{{HostID: 100000, Size: 65536}}}
	pool := []specs.LinuxIDMapping{{HostID: 165536, Size: 65536}}
	withUserns := func() *specs.Spec {
		s := defaultSpec("/bin/true")
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		s.Linux.UIDMappings, s.Linux.GIDMappings = pool, pool
		return s
	}

	err := translate(withUserns(), &translation{cgroupns: true})
	assert.True(t, errdefs.IsNotImplemented(err), "user namespace on a plain daemon: %v", err)

	s := withUserns()
	tr := &translation{cgroupns: true, remap: remap}
	require.NoError(t, translate(s, tr))
	assert.Empty(t, tr.host.UsernsMode, "the daemon's user namespace")
	assert.Equal(t, remap.UID, s.Linux.UIDMappings, "the record holds the mapping in force, not the pool's")
	assert.Equal(t, remap.GID, s.Linux.GIDMappings)

	s = defaultSpec("/bin/true")
	tr = &translation{cgroupns: true, remap: remap}
	require.NoError(t, translate(s, tr))
	assert.Equal(t, container.UsernsMode("host"), tr.host.UsernsMode, "no user namespace asked for: the host's")
	assert.Empty(t, s.Linux.UIDMappings)
}

func TestTranslateMounts(t *testing.T) {
	src := t.TempDir()
	s := defaultSpec("/bin/true")
	s.Mounts = append(s.Mounts,
		specs.Mount{Destination: "/data", Type: "bind", Source: src, Options: []string{"rbind", "ro", "rprivate"}},
		specs.Mount{Destination: "/one", Source: src, Options: []string{"bind"}},
		specs.Mount{Destination: "/scratch", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "size=4m"}},
		specs.Mount{Destination: "/all", Type: "bind", Source: src, Options: []string{"rbind", "rro", "rslave"}},
	)
	tr := &translation{cgroupns: true}
	require.NoError(t, translate(s, tr))
	require.Len(t, tr.host.Mounts, 3)
	assert.Equal(t, mount.Mount{Type: mount.TypeBind, Source: src, Target: "/all", ReadOnly: true,
		BindOptions: &mount.BindOptions{Propagation: mount.PropagationRSlave}}, tr.host.Mounts[2], "rro: read-only over berth's read-only mount")
	assert.Equal(t, mount.Mount{Type: mount.TypeBind, Source: src, Target: "/data", ReadOnly: true,
		BindOptions: &mount.BindOptions{Propagation: mount.PropagationRPrivate}}, tr.host.Mounts[0])
	assert.True(t, tr.host.Mounts[1].BindOptions.NonRecursive, "bind, not rbind")
	assert.Equal(t, map[string]string{"/scratch": "nosuid,size=4m"}, tr.host.Tmpfs)

	// nosuid on a bind is inherited from the source's mount, never set by
	// Docker: accepted when the source is mounted nosuid (TestTranslateRefusals
	// has the other case).
	if os.Geteuid() == 0 {
		nosuid := t.TempDir()
		require.NoError(t, unix.Mount("tmpfs", nosuid, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1m"))
		t.Cleanup(func() { _ = unix.Unmount(nosuid, unix.MNT_DETACH) })
		ok := defaultSpec("/bin/true")
		ok.Mounts = append(ok.Mounts, specs.Mount{Destination: "/p", Type: "bind", Source: nosuid, Options: []string{"rbind", "nosuid", "nodev"}})
		require.NoError(t, translate(ok, &translation{cgroupns: true}))

		// A read-only bind of a source mounted read-only inherits it:
		// Docker's remount to make it read-only would clear nosuid and
		// nodev.
		ro := t.TempDir()
		require.NoError(t, unix.Mount("tmpfs", ro, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_RDONLY, "size=1m"))
		t.Cleanup(func() { _ = unix.Unmount(ro, unix.MNT_DETACH) })
		inherit := defaultSpec("/bin/true")
		inherit.Mounts = append(inherit.Mounts, specs.Mount{Destination: "/r", Type: "bind", Source: ro, Options: []string{"rbind", "rro", "rprivate", "nosuid", "nodev"}})
		tr := &translation{cgroupns: true}
		require.NoError(t, translate(inherit, tr))
		require.Len(t, tr.host.Mounts, 1)
		assert.False(t, tr.host.Mounts[0].ReadOnly, "read-only, nosuid and nodev from the source's mount, never a remount")
	}

	idmapped := defaultSpec("/bin/true")
	idmapped.Mounts = append(idmapped.Mounts, specs.Mount{Destination: "/v", Type: "bind", Source: src, Options: []string{"rbind", "idmap"}})
	err := translate(idmapped, &translation{cgroupns: true})
	assert.True(t, errdefs.IsNotImplemented(err), "ID-mapped bind without a user namespace: %v", err)
}

// What Docker cannot express is refused, never dropped.
func TestTranslateRefusals(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	require.NoError(t, os.Mkdir(plain, 0o755))
	one := int64(1)
	for name, tc := range map[string]struct {
		edit  func(*specs.Spec)
		class func(error) bool
	}{
		"root directory":     {func(s *specs.Spec) { s.Root.Path = dir }, errdefs.IsNotImplemented},
		"hooks":              {func(s *specs.Spec) { s.Hooks = &specs.Hooks{} }, errdefs.IsNotImplemented},
		"annotations":        {func(s *specs.Spec) { s.Annotations = map[string]string{"a": "b"} }, errdefs.IsNotImplemented},
		"console size alone": {func(s *specs.Spec) { s.Process.ConsoleSize = &specs.Box{Height: 2, Width: 3} }, errdefs.IsInvalidArgument},
		"umask":              {func(s *specs.Spec) { u := uint32(0o22); s.Process.User.Umask = &u }, errdefs.IsNotImplemented},
		"ambient caps":       {func(s *specs.Spec) { s.Process.Capabilities.Ambient = []string{"CAP_KILL"} }, errdefs.IsNotImplemented},
		"differing cap sets": {func(s *specs.Spec) { s.Process.Capabilities.Effective = nil }, errdefs.IsNotImplemented},
		"RLIMIT_AS":          {func(s *specs.Spec) { s.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_AS", Hard: 1, Soft: 1}} }, errdefs.IsNotImplemented},
		"cgroups path":       {func(s *specs.Spec) { s.Linux.CgroupsPath = "/x" }, errdefs.IsNotImplemented},
		"namespace path":     {func(s *specs.Spec) { s.Linux.Namespaces[0].Path = "/proc/1/ns/pid" }, errdefs.IsNotImplemented},
		"no mount namespace": {func(s *specs.Spec) { s.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.UTSNamespace}} }, errdefs.IsNotImplemented},
		"time namespace": {func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.TimeNamespace})
		}, errdefs.IsNotImplemented},
		"missing /proc": {func(s *specs.Spec) { s.Mounts = s.Mounts[1:] }, errdefs.IsNotImplemented},
		"rw /sys":       {func(s *specs.Spec) { s.Mounts[5].Options = []string{"nosuid", "noexec", "nodev"} }, errdefs.IsNotImplemented},
		"other fs": {func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/x", Type: "ext4", Source: "/dev/vdb"})
		}, errdefs.IsNotImplemented},
		"nosuid bind":         {func(s *specs.Spec) { s.Mounts = append(s.Mounts, bindOf(plain, "nosuid")) }, errdefs.IsNotImplemented},
		"relative bind":       {func(s *specs.Spec) { s.Mounts = append(s.Mounts, bindOf("rel", "rbind")) }, errdefs.IsInvalidArgument},
		"missing bind source": {func(s *specs.Spec) { s.Mounts = append(s.Mounts, bindOf(filepath.Join(dir, "none"), "rbind")) }, errdefs.IsInvalidArgument},
		"kernel memory":       {func(s *specs.Spec) { s.Linux.Resources.Memory = &specs.LinuxMemory{Kernel: &one} }, errdefs.IsNotImplemented},
		"device deny rule": {func(s *specs.Spec) {
			s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{Access: "r"})
		}, errdefs.IsNotImplemented},
		"no deny-all first": {func(s *specs.Spec) {
			s.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
		}, errdefs.IsNotImplemented},
		"missing host device": {func(s *specs.Spec) {
			s.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/x", Type: "b", Major: 4095, Minor: 4095}}
		}, errdefs.IsInvalidArgument},
		"device without access": {func(s *specs.Spec) {
			s.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/null", Type: "c", Major: 1, Minor: 3}}
		}, errdefs.IsNotImplemented},
		"hostname without UTS": {func(s *specs.Spec) {
			s.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.MountNamespace}}
		}, errdefs.IsInvalidArgument},
		"seccomp listener": {func(s *specs.Spec) { s.Linux.Seccomp = &specs.LinuxSeccomp{ListenerPath: "/x"} }, errdefs.IsNotImplemented},
	} {
		t.Run(name, func(t *testing.T) {
			s := defaultSpec("/bin/true")
			tc.edit(s)
			err := translate(s, &translation{cgroupns: true})
			require.Error(t, err)
			assert.True(t, tc.class(err), "%v", err)
		})
	}
}

func bindOf(src string, opts ...string) specs.Mount {
	return specs.Mount{Destination: "/b", Type: "bind", Source: src, Options: opts}
}

// A device node of the spec becomes a mapping of the host's node with the
// same numbers, with the access the spec's rules grant.
func TestTranslateDevices(t *testing.T) {
	s := defaultSpec("/bin/true")
	major, minor := int64(1), int64(3)
	s.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/mynull", Type: "c", Major: 1, Minor: 3}}
	s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: &major, Minor: &minor, Access: "rw"})
	tr := &translation{cgroupns: true}
	require.NoError(t, translate(s, tr))
	assert.Equal(t, []container.DeviceMapping{{PathOnHost: "/dev/null", PathInContainer: "/dev/mynull", CgroupPermissions: "rw"}}, tr.host.Devices)
}

func TestDaemonMapping(t *testing.T) {
	dir := t.TempDir()
	subuid, subgid := filepath.Join(dir, "subuid"), filepath.Join(dir, "subgid")
	require.NoError(t, os.WriteFile(subuid, []byte("alice:200000:1000\ndockremap:100000:65536\ndockremap:300000:10\n"), 0o644))
	require.NoError(t, os.WriteFile(subgid, []byte("dockremap:100001:65536\n"), 0o644))
	m, ok := daemonMapping("/var/lib/docker/100000.100001", subuid, subgid)
	require.True(t, ok)
	assert.Equal(t, []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}, {ContainerID: 65536, HostID: 300000, Size: 10}}, m.UID)
	assert.Equal(t, []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100001, Size: 65536}}, m.GID)

	m, ok = daemonMapping("/var/lib/docker/123.456", filepath.Join(dir, "none"), filepath.Join(dir, "none"))
	require.True(t, ok, "without the files, Docker's default size is assumed")
	assert.Equal(t, []specs.LinuxIDMapping{{HostID: 123, Size: remapDefaultSize}}, m.UID)

	_, ok = daemonMapping("/var/lib/docker", subuid, subgid)
	assert.False(t, ok)
}

// A profile that allows everything and says nothing else is Docker's
// seccomp=unconfined (no filter); any other goes inline; none leaves the
// daemon's default.
func TestTranslateSeccomp(t *testing.T) {
	opts := func(sc *specs.LinuxSeccomp) []string {
		s := defaultSpec("/bin/true")
		s.Linux.Seccomp = sc
		tr := &translation{cgroupns: true}
		require.NoError(t, translate(s, tr))
		var out []string
		for _, o := range tr.host.SecurityOpt {
			if strings.HasPrefix(o, "seccomp") {
				out = append(out, o)
			}
		}
		return out
	}
	assert.Equal(t, []string{"seccomp=unconfined"}, opts(&specs.LinuxSeccomp{DefaultAction: specs.ActAllow}))
	assert.Equal(t, []string{`seccomp={"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["keyctl"],"action":"SCMP_ACT_ERRNO"}]}`},
		opts(&specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"keyctl"}, Action: specs.ActErrno}}}))
	assert.Empty(t, opts(nil), "Docker's default profile")
}
