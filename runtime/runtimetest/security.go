package runtimetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/containerd/errdefs"

	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/volume"
)

// tenantDir is where the hostile-tenant tool appears in containers.
const tenantDir = "/berth-tenant"

// withTenant binds the tenant tool (internal/fixture/tenant) into cfg's
// container at /berth-tenant/tenant.
func withTenant(t *testing.T, cfg *runtime.Config) {
	cfg.Spec.Mounts = append(cfg.Spec.Mounts, specs.Mount{Destination: tenantDir, Type: "bind", Source: fixture.TenantTool(t), Options: []string{"rbind", "ro"}})
}

// requireNotCreated checks that a refused create left nothing: no
// container, nothing of the backend's, no volume record or mount.
func requireNotCreated(t *testing.T, h Harness, rt *runtime.Runtime, id string) {
	t.Helper()
	_, err := rt.Get(testContext(t), id)
	require.Truef(t, isNotFound(err), "refused create left container %s: %v", id, err)
	require.Empty(t, h.Leftovers(t, rt, id), "left behind by the refused create of %s", id)
}

// A spec that loosens the container's confinement is refused unless the
// runtime's policy allows privileged containers (the suite's runtimes do
// not): each way through which root in the container could reach the host.
func testPrivilegedRefused(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	require.False(t, rt.SecurityPolicy().AllowPrivileged, "the suite runs the default policy")
	cases := map[string]func(*specs.Spec){
		"CAP_SYS_ADMIN": func(s *specs.Spec) {
			s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN")
			s.Process.Capabilities.Effective = append(s.Process.Capabilities.Effective, "CAP_SYS_ADMIN")
			s.Process.Capabilities.Permitted = append(s.Process.Capabilities.Permitted, "CAP_SYS_ADMIN")
		},
		"ambient CAP_SYS_MODULE": func(s *specs.Spec) {
			s.Process.Capabilities.Ambient = []string{"CAP_SYS_MODULE"}
		},
		"createRuntime hook": func(s *specs.Spec) {
			s.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "touch /tmp/berth-hook-ran"}}}}
		},
		"poststop hook": func(s *specs.Spec) { s.Hooks = &specs.Hooks{Poststop: []specs.Hook{{Path: "/bin/true"}}} },
		"host network namespace by path": func(s *specs.Spec) {
			for i, n := range s.Linux.Namespaces {
				if n.Type == specs.NetworkNamespace {
					s.Linux.Namespaces[i].Path = "/proc/1/ns/net"
				}
			}
		},
		"host PID namespace": func(s *specs.Spec) {
			var ns []specs.LinuxNamespace
			for _, n := range s.Linux.Namespaces {
				if n.Type != specs.PIDNamespace {
					ns = append(ns, n)
				}
			}
			s.Linux.Namespaces = ns
		},
		"cgroups path of its own": func(s *specs.Spec) { s.Linux.CgroupsPath = "/" },
		"a device": func(s *specs.Spec) {
			major, minor := int64(1), int64(1)
			s.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/mem", Type: "c", Major: 1, Minor: 1}}
			s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: &major, Minor: &minor, Access: "r"})
		},
		"writable sysfs": func(s *specs.Spec) {
			for i, m := range s.Mounts {
				if m.Type == "sysfs" {
					s.Mounts[i].Options = []string{"nosuid", "noexec", "nodev"}
				}
			}
		},
		"proc outside /proc": func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/hostproc", Type: "proc", Source: "proc"})
		},
		"unmasked /proc/kcore": func(s *specs.Spec) {
			s.Linux.MaskedPaths = s.Linux.MaskedPaths[1:]
		},
		"writable /proc/sys": func(s *specs.Spec) { s.Linux.ReadonlyPaths = nil },
		"unconfined seccomp": func(s *specs.Spec) {
			s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActAllow}
		},
		"no capability sets (all kept)": func(s *specs.Spec) { s.Process.Capabilities = nil },
		"seccomp allowing unshare and mount": func(s *specs.Spec) {
			s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{
				{Names: []string{"read", "write", "exit_group", "execve", "unshare", "mount"}, Action: specs.ActAllow}}}
		},
		"sysfs outside /sys": func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/sys2", Type: "sysfs", Source: "sysfs", Options: []string{"ro", "nosuid", "nodev", "noexec"}})
		},
		"seccomp admitting the 32-bit ABI": func(s *specs.Spec) {
			sc, err := runtime.DefaultSeccompProfile(s)
			if err != nil {
				panic(err)
			}
			sc.Architectures = append(sc.Architectures, specs.ArchX86, specs.ArchX32)
			s.Linux.Seccomp = sc
		},
		"sysfs ro then rw": func(s *specs.Spec) {
			for i, m := range s.Mounts {
				if m.Type == "sysfs" || m.Type == "cgroup" {
					s.Mounts[i].Options = append(s.Mounts[i].Options, "rw")
				}
			}
		},
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := h.Config(t, "/bin/true")
			mutate(cfg.Spec)
			id := NewID("priv")
			_, err := rt.Create(ctx, id, cfg)
			require.Truef(t, errdefs.IsPermissionDenied(err), "%s: %v", name, err)
			require.Contains(t, err.Error(), id)
			requireNotCreated(t, h, rt, id)
		})
	}
	_, err := os.Stat("/tmp/berth-hook-ran")
	require.True(t, os.IsNotExist(err), "a hook ran on the host")
}

// kernelSources are host paths on kernel interface filesystems, or trees
// that carry them: bound into a container without a user namespace, each
// would let its root reach the host's devices (a devices cgroup it can
// join, device nodes, sysfs) or kernel.
func kernelSources(t *testing.T) []string {
	srcs := []string{"/sys", "/proc", "/dev", "/", "/sys/fs/cgroup"}
	for _, p := range []string{"/sys/fs/cgroup/devices", "/sys/fs/cgroup/unified", "/proc/sys", "/dev/pts"} {
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			srcs = append(srcs, p)
		}
	}
	// The same through a link the caller might pass.
	link := filepath.Join(t.TempDir(), "cg")
	require.NoError(t, os.Symlink("/sys/fs/cgroup", link))
	return append(srcs, link)
}

func testKernelInterfaceBinds(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	for _, src := range kernelSources(t) {
		t.Run("volume "+src, func(t *testing.T) {
			cfg := h.Config(t, "/bin/true")
			cfg.Volumes = []volume.Spec{{Source: src, Destination: "/hostfs"}}
			id := NewID("kvol")
			_, err := rt.Create(ctx, id, cfg)
			require.Truef(t, isInvalidArgument(err), "volume of %s: %v", src, err)
			requireNotCreated(t, h, rt, id)
		})
		t.Run("bind "+src, func(t *testing.T) {
			cfg := h.Config(t, "/bin/true")
			cfg.Spec.Mounts = append(cfg.Spec.Mounts, specs.Mount{Destination: "/hostfs", Type: "bind", Source: src, Options: []string{"rbind", "ro"}})
			id := NewID("kbind")
			_, err := rt.Create(ctx, id, cfg)
			require.Truef(t, isInvalidArgument(err), "bind of %s: %v", src, err)
			requireNotCreated(t, h, rt, id)
		})
	}
	// Files there as image volumes: a loop device over /proc/self/mem or
	// a sysfs attribute would hand kernel data to the tenant.
	for _, src := range []string{"/proc/self/mem", "/sys/kernel/uevent_helper", "/proc/sys/kernel/core_pattern"} {
		if _, err := os.Stat(src); err != nil {
			continue
		}
		for _, mode := range []volume.Mode{volume.ModeHostMount, volume.ModeRawBlock} {
			if mode == volume.ModeRawBlock && !(rt.Capabilities().UserNamespace && rt.Capabilities().RawBlock) {
				continue // refused earlier, for want of a user namespace
			}
			t.Run("image "+src+" "+string(mode), func(t *testing.T) {
				cfg := h.Config(t, "/bin/true")
				cfg.UserNamespace = rt.Capabilities().UserNamespace
				cfg.Volumes = []volume.Spec{{Source: src, Destination: "/dev/xvdk", Mode: mode, ReadOnly: true}}
				id := NewID("kimg")
				_, err := rt.Create(ctx, id, cfg)
				require.Truef(t, isInvalidArgument(err) || isNotImplemented(err), "image volume %s: %v", src, err)
				requireNotCreated(t, h, rt, id)
			})
		}
	}
}

// Every container runs under a seccomp profile (Docker's default where
// the caller gives none): a process without CAP_SYS_ADMIN cannot make a
// user namespace, where it would gain the capabilities to mount and to
// reach kernel code no container should; nor can it reach the kernel's
// 32-bit system call entry.
func testSeccomp(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	for _, userns := range []bool{false, true} {
		if userns && !rt.Capabilities().UserNamespace {
			continue
		}
		out := newBuffer()
		cfg := h.Config(t, "/bin/sh", "-c", "grep '^Seccomp:' /proc/self/status; unshare -U true && echo unshare-allowed; "+tenantDir+"/tenant unshare-user; "+tenantDir+"/tenant compat-syscall")
		withTenant(t, cfg)
		cfg.UserNamespace = userns
		cfg.IO = runtime.IO{Stdout: out, Stderr: out}
		c := create(t, rt, NewID("seccomp"), cfg)
		require.NoError(t, c.Start(ctx))
		_, err := c.Wait(ctx)
		require.NoError(t, err)
		require.Contains(t, out.String(), "Seccomp:\t2", "a seccomp filter confines the container (userns %v): %s", userns, out)
		require.NotContains(t, out.String(), "unshare-allowed")
		require.Contains(t, out.String(), "unshare-user: EPERM", "userns %v: %s", userns, out)
		if !strings.Contains(out.String(), "compat-syscall: unsupported") {
			require.Contains(t, out.String(), "compat-syscall: killed by SIGSYS", "32-bit system calls are refused: %s", out)
		}
		require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	}
}

// loopOf returns the loop device (loopN) backed by img, or "".
func loopOf(t *testing.T, img string) string {
	t.Helper()
	ents, err := os.ReadDir("/sys/block")
	require.NoError(t, err)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "loop", "backing_file"))
		if err == nil && strings.TrimSpace(string(b)) == img {
			return e.Name()
		}
	}
	return ""
}

// loopState is what the host kernel knows of a loop device that a tenant
// might change: its backing file, flags, geometry and partitions.
func loopState(t *testing.T, dev string) string {
	t.Helper()
	var parts []string
	for _, f := range []string{"backing_file", "autoclear", "partscan", "offset", "sizelimit", "dio", "ro"} {
		b, _ := os.ReadFile(filepath.Join("/sys/block", dev, "loop", f))
		parts = append(parts, f+"="+strings.TrimSpace(string(b)))
	}
	for _, f := range []string{"ro", "size", "queue/logical_block_size"} {
		b, _ := os.ReadFile(filepath.Join("/sys/block", dev, f))
		parts = append(parts, f+"="+strings.TrimSpace(string(b)))
	}
	ents, _ := os.ReadDir(filepath.Join("/sys/block", dev))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), dev+"p") {
			parts = append(parts, "partition "+e.Name())
		}
	}
	return strings.Join(parts, " ")
}

// A container holding a raw loop device can neither release it (so that
// its number would go to the next attach anywhere on the host, another
// tenant's, while it keeps the node and the cgroup rule), nor re-point it,
// nor change how the host kernel reads it (partition scan, block size,
// capacity): every such ioctl is denied, whatever the request's upper
// bits; ordinary ioctls still work.
func testRawDeviceIoctls(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	caps := rt.Capabilities()
	if !caps.RawBlock || !caps.UserNamespace {
		t.Skip("backend has no raw block devices in user namespaces")
	}
	img := zeroImage(t, 8<<20)
	// A partition table the host kernel would parse if the tenant turned
	// on the partition scan.
	mbr := make([]byte, 512)
	copy(mbr[446:], []byte{0x00, 0, 0, 0, 0x83, 0, 0, 0, 0x08, 0, 0, 0, 0x00, 0x20, 0, 0})
	mbr[510], mbr[511] = 0x55, 0xAA
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(mbr, 0)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	out := newBuffer()
	cfg := h.Config(t, tenantDir+"/tenant", "ioctls", "/dev/xvdb")
	withTenant(t, cfg)
	cfg.UserNamespace = true
	cfg.Volumes = []volume.Spec{{Source: img, Destination: "/dev/xvdb", Mode: volume.ModeRawBlock}}
	cfg.IO = runtime.IO{Stdout: out, Stderr: out}
	id := NewID("rawioctl")
	c := create(t, rt, id, cfg)
	dev := loopOf(t, img)
	require.NotEmpty(t, dev, "the raw volume is on a loop device")
	before := loopState(t, dev)
	require.NoError(t, c.Start(ctx))
	_, err = c.Wait(ctx)
	require.NoError(t, err)
	got := out.String()
	require.Contains(t, got, "BLKGETSIZE64: ok", "ordinary ioctls work: %s", got)
	for _, req := range []string{"LOOP_CLR_FD", "LOOP_CLR_FD+hi", "LOOP_SET_STATUS64", "LOOP_CHANGE_FD", "LOOP_SET_CAPACITY", "LOOP_SET_DIRECT_IO", "LOOP_SET_BLOCK_SIZE"} {
		require.Contains(t, got, req+": EPERM", "%s is denied: %s", req, got)
	}
	// The block layer's own (CAP_SYS_ADMIN in the initial namespace).
	for _, req := range []string{"BLKRRPART", "BLKPG"} {
		require.Regexp(t, req+`: (EPERM|EACCES)`, got, "%s is denied: %s", req, got)
	}
	// The container still exists: its device is still the tenant's file,
	// as the host kernel left it, and nobody else can get its number.
	require.Equal(t, dev, loopOf(t, img), "the loop device still backs the image")
	require.Equal(t, before, loopState(t, dev), "the tenant changed how the host reads its device")
	other := zeroImage(t, 4<<20)
	cfg2 := h.Config(t, "/bin/true")
	cfg2.UserNamespace = true
	cfg2.Volumes = []volume.Spec{{Source: other, Destination: "/dev/xvdc", Mode: volume.ModeRawBlock}}
	c2 := create(t, rt, NewID("rawnext"), cfg2)
	require.NotEqual(t, dev, loopOf(t, other), "the next attach got the first tenant's device number")
	require.NoError(t, c2.Delete(ctx, runtime.DeleteOptions{}))
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	requireDetached(t, img)
	requireGone(t, h, rt, id, nil)
}

// What a tenant plants where a hot attach will put its volume (a FIFO, a
// link, a file of the wrong kind) refuses the attach at once with
// failed-precondition, never wedges it nor the container's deletion, and
// leaves nothing attached.
func testHotAttachPlanted(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	caps := rt.Capabilities()
	if !caps.HotAttach || !caps.Exec {
		t.Skip("backend has no hot attach")
	}
	cfg := h.Config(t, "/bin/sleep", "1000")
	cfg.UserNamespace = caps.UserNamespace
	id := NewID("planted")
	c := create(t, rt, id, cfg)
	require.NoError(t, c.Start(ctx))
	out := newBuffer()
	p, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/sh", "-c", strings.Join([]string{
		"mkfifo /dev/vdc",
		"mkdir /dev/vdd",
		"ln -s /etc/passwd /dev/vde",
		"mkdir -p /srv && mkfifo /srv/fifo && echo x > /srv/file",
		"ln -s /proc/1/root /srv/escape",
		"echo planted",
	}, "; ")}}, runtime.IO{Stdout: out, Stderr: out})
	require.NoError(t, err)
	_, err = p.Wait(ctx)
	require.NoError(t, err)
	require.Contains(t, out.String(), "planted")

	raw := zeroImage(t, 4<<20)
	attempts := []volume.Spec{
		{Destination: "/srv/fifo", TmpfsSize: 1 << 20},
		{Destination: "/srv/file", TmpfsSize: 1 << 20},
		{Destination: "/srv/escape", TmpfsSize: 1 << 20},
		{Destination: "/srv/escape/x", TmpfsSize: 1 << 20},
	}
	if caps.RawBlock && caps.UserNamespace {
		attempts = append(attempts,
			volume.Spec{Source: raw, Destination: "/dev/vdc", Mode: volume.ModeRawBlock},
			volume.Spec{Source: raw, Destination: "/dev/vdd", Mode: volume.ModeRawBlock},
			volume.Spec{Source: raw, Destination: "/dev/vde", Mode: volume.ModeRawBlock})
	}
	for _, v := range attempts {
		start := time.Now()
		err := c.AttachVolume(ctx, v)
		require.Truef(t, isFailedPrecondition(err), "attach at planted %s: %v (after %s)", v.Destination, err, time.Since(start))
		requireDetached(t, raw)
		vols, err := c.Volumes(ctx)
		require.NoError(t, err)
		require.Empty(t, vols, "a refused attach is not recorded")
	}
	// The tenant's files are as it left them.
	out = newBuffer()
	p, err = c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/sh", "-c", "test -p /dev/vdc && test -d /dev/vdd && test -L /dev/vde && test -p /srv/fifo && test -L /srv/escape && head -c 4 /etc/passwd"}}, runtime.IO{Stdout: out, Stderr: out})
	require.NoError(t, err)
	es, err := p.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 0, es.Code, "planted files changed: %s", out)
	require.Equal(t, "root", out.String())
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{Force: true}))
	requireDetached(t, raw)
	requireGone(t, h, rt, id, nil)
}

// A tenant that moves a hot-attached volume (renaming a directory above
// it) and puts a link where it was cannot make a detach miss it nor hit
// something else: the detach takes out the volume's own mount wherever it
// went, and its device leaves the devices cgroup, before the host releases
// the loop device (which another attach could then get); the container's
// read-only /proc/sys stays read-only.
func testHotDetachMovedVolume(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	caps := rt.Capabilities()
	if !caps.HotAttach || !caps.Exec {
		t.Skip("backend has no hot attach")
	}
	cfg := h.Config(t, "/bin/sleep", "1000")
	cfg.UserNamespace = caps.UserNamespace
	id := NewID("moved")
	c := create(t, rt, id, cfg)
	require.NoError(t, c.Start(ctx))
	sh := func(script string) string {
		t.Helper()
		out := newBuffer()
		p, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/sh", "-c", script}}, runtime.IO{Stdout: out, Stderr: out})
		require.NoError(t, err)
		_, err = p.Wait(ctx)
		require.NoError(t, err)
		return out.String()
	}

	require.NoError(t, c.AttachVolume(ctx, volume.Spec{Destination: "/vol/sys", TmpfsSize: 1 << 20}))
	sh("mv /vol /vol2 && ln -s /proc /vol")
	require.NoError(t, c.DetachVolume(ctx, "/vol/sys"))
	got := sh("grep -E ' /proc/sys | /vol2/sys ' /proc/mounts")
	require.Contains(t, got, " /proc/sys proc ro,", "/proc/sys is still read-only: %s", got)
	require.NotContains(t, got, "/vol2/sys", "the moved volume was detached: %s", got)

	if caps.RawBlock && caps.UserNamespace {
		img := zeroImage(t, 4<<20)
		require.NoError(t, os.WriteFile(img, []byte("tenant-disk"), 0o600))
		require.NoError(t, os.Truncate(img, 4<<20))
		require.NoError(t, c.AttachVolume(ctx, volume.Spec{Source: img, Destination: "/data/vdb", Mode: volume.ModeRawBlock}))
		require.Contains(t, sh("head -c 11 /data/vdb"), "tenant-disk")
		sh("mv /data /data2 && mkdir /data")
		require.NoError(t, c.DetachVolume(ctx, "/data/vdb"))
		requireDetached(t, img)
		got := sh("test -e /data2/vdb && echo node-kept; head -c 11 /data2/vdb 2>&1; echo")
		require.NotContains(t, got, "node-kept", "the moved device's mount went: %s", got)
		require.NotContains(t, got, "tenant-disk")
	}
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{Force: true}))
	requireGone(t, h, rt, id, nil)
}

// A container that holds no block device of its own cannot do through a
// descriptor another container hands it (SCM_RIGHTS over a unix socket in a
// volume they share) what the holder itself may not: the device ioctl
// rules are every container's.
func testDeviceHandedOver(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	caps := rt.Capabilities()
	if !caps.RawBlock || !caps.UserNamespace {
		t.Skip("backend has no raw block devices in user namespaces")
	}
	shared := fixture.TempDir(t)
	require.NoError(t, os.Chmod(shared, 0o777))
	img := zeroImage(t, 4<<20)

	holderOut := newBuffer()
	holder := h.Config(t, tenantDir+"/tenant", "send-fd", "/shared/sock", "/dev/xvdb")
	withTenant(t, holder)
	holder.UserNamespace = true
	holder.Volumes = []volume.Spec{{Source: img, Destination: "/dev/xvdb", Mode: volume.ModeRawBlock}, {Source: shared, Destination: "/shared"}}
	holder.IO = runtime.IO{Stdout: holderOut, Stderr: holderOut}
	hc := create(t, rt, NewID("holder"), holder)
	require.NoError(t, hc.Start(ctx))
	require.NoError(t, holderOut.waitFor(ctx, "listening"))
	dev := loopOf(t, img)
	require.NotEmpty(t, dev)
	before := loopState(t, dev)

	out := newBuffer()
	plain := h.Config(t, tenantDir+"/tenant", "recv-ioctls", "/shared/sock")
	withTenant(t, plain)
	plain.Volumes = []volume.Spec{{Source: shared, Destination: "/shared"}}
	plain.IO = runtime.IO{Stdout: out, Stderr: out}
	pc := create(t, rt, NewID("plain"), plain)
	require.NoError(t, pc.Start(ctx))
	_, err := pc.Wait(ctx)
	require.NoError(t, err)
	got := out.String()
	require.Contains(t, got, "BLKGETSIZE64: ok", "the descriptor arrived: %s", got)
	for _, req := range []string{"LOOP_CLR_FD", "LOOP_SET_STATUS64", "LOOP_CHANGE_FD"} {
		require.Contains(t, got, req+": EPERM", "%s through a handed descriptor: %s", req, got)
	}
	_, err = hc.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, dev, loopOf(t, img), "the loop device still backs the image")
	require.Equal(t, before, loopState(t, dev))
	require.NoError(t, pc.Delete(ctx, runtime.DeleteOptions{}))
	require.NoError(t, hc.Delete(ctx, runtime.DeleteOptions{}))
	requireDetached(t, img)
}

// A detach finds a volume's mount however the tenant's view of it differs
// from the destination berth was given: through a link the root filesystem
// holds where the destination is (the engine mounted the volume where it
// led), or with the container's init in a chroot of its own (its mount
// table no longer shows the volume).
func testDetachUnderTenantViews(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	caps := rt.Capabilities()
	if !caps.HotAttach || !caps.Exec {
		t.Skip("backend has no hot attach")
	}
	cfg := h.Config(t, "/bin/sh", "-c", "mkdir -p /jail && cp -a /bin /jail/ && exec chroot /jail /bin/sleep 1000")
	if cfg.Spec.Root == nil || cfg.Spec.Root.Path == "" {
		t.Skip("the harness gives no root filesystem directory to plant a link in")
	}
	require.NoError(t, os.MkdirAll(filepath.Join(cfg.Spec.Root.Path, "srv"), 0o755))
	require.NoError(t, os.Symlink("/srv", filepath.Join(cfg.Spec.Root.Path, "data")))
	cfg.UserNamespace = caps.UserNamespace
	img := ext4Image(t)
	cfg.Volumes = []volume.Spec{{Source: img, Destination: "/data"}}
	id := NewID("views")
	c := create(t, rt, id, cfg)
	require.NoError(t, c.Start(ctx))
	sh := func(script string) string {
		t.Helper()
		out := newBuffer()
		p, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/sh", "-c", script}}, runtime.IO{Stdout: out, Stderr: out})
		require.NoError(t, err)
		_, err = p.Wait(ctx)
		require.NoError(t, err)
		return out.String()
	}
	require.Contains(t, sh("grep ' /srv ' /proc/mounts"), " ext4 ", "the volume is where the link led")
	require.NoError(t, c.AttachVolume(ctx, volume.Spec{Destination: "/vol", TmpfsSize: 1 << 20}))

	require.NoError(t, c.DetachVolume(ctx, "/data"))
	require.NoError(t, c.DetachVolume(ctx, "/vol"))
	got := sh("grep -E ' /srv | /vol ' /proc/mounts; echo done")
	require.Equal(t, "done\n", got, "the detached volumes are gone from the container")
	requireDetached(t, img)
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{Force: true}))
	requireGone(t, h, rt, id, nil)
}

// A container that kept a descriptor of its raw device across a hot detach
// still reaches the device (Linux cannot take a descriptor back): the
// device stays its own until it is deleted, and no other container gets it
// meanwhile.
func testDetachedDeviceStaysItsOwn(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	caps := rt.Capabilities()
	if !caps.HotAttach || !caps.RawBlock || !caps.UserNamespace || !caps.Exec {
		t.Skip("backend has no hot attach of raw devices")
	}
	img := zeroImage(t, 4<<20)
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	require.NoError(t, err)
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })

	cfg := h.Config(t, "/bin/sleep", "1000")
	cfg.UserNamespace = true
	id := NewID("keeper")
	c := create(t, rt, id, cfg)
	require.NoError(t, c.Start(ctx))
	require.NoError(t, c.AttachVolume(ctx, volume.Spec{Source: dev, Destination: "/dev/vdb", Mode: volume.ModeRawBlock}))
	held := newBuffer()
	p, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/sh", "-c", "exec 3<>/dev/vdb; echo holding; exec sleep 1000"}}, runtime.IO{Stdout: held, Stderr: held})
	require.NoError(t, err)
	require.NoError(t, held.waitFor(ctx, "holding"))
	require.NoError(t, c.DetachVolume(ctx, "/dev/vdb"))
	vols, err := c.Volumes(ctx)
	require.NoError(t, err)
	require.Empty(t, vols)

	other := h.Config(t, "/bin/true")
	other.UserNamespace = true
	other.Volumes = []volume.Spec{{Source: dev, Destination: "/dev/vdb", Mode: volume.ModeRawBlock}}
	_, err = rt.Create(ctx, NewID("next"), other)
	require.Truef(t, isFailedPrecondition(err), "the device went to another container while the first holds it: %v", err)

	_ = p.Signal(ctx, 9)
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{Force: true}))
	next := create(t, rt, NewID("next"), other)
	require.NoError(t, next.Delete(ctx, runtime.DeleteOptions{}))
}

// A container whose init ended its main thread alone (its other threads
// live on, the leader a zombie) is still deleted, with nothing left: the
// engine may take it for stopped, but its processes are killed and its
// cgroups removed.
func testLeaderExitedAlone(t *testing.T, h Harness) {
	ctx := testContext(t)
	rt := h.Open(t)
	out := newBuffer()
	marker := NewID("leader-exits")
	cfg := h.Config(t, tenantDir+"/tenant", "leader-exits", marker)
	withTenant(t, cfg)
	cfg.IO = runtime.IO{Stdout: out, Stderr: out}
	id := NewID("leader")
	c, err := rt.Create(ctx, id, cfg)
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx))
	require.NoError(t, out.waitFor(ctx, "leader exiting"))
	require.NotEmpty(t, threadsWith(marker), "the tenant's threads run on")
	// The leader's own cgroup file no longer tells (it is a zombie):
	// the harness's leftovers name the container's cgroups.
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{Force: true}))
	requireGone(t, h, rt, id, nil)
	require.Empty(t, threadsWith(marker), "the container's threads outlive its deletion")
}

// threadsWith lists the host's threads whose command line holds marker.
func threadsWith(marker string) []string {
	var out []string
	tasks, _ := filepath.Glob("/proc/[0-9]*/task/[0-9]*")
	for _, t := range tasks {
		if b, err := os.ReadFile(filepath.Join(t, "cmdline")); err == nil && strings.Contains(string(b), marker) {
			out = append(out, t)
		}
	}
	return out
}
