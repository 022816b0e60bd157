package runtimetest

import (
	"maps"
	"os"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/containerd/errdefs"

	"github.com/berthrun/berth/runtime"
)

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
	cases := map[string]func(*specs.Spec){}
	for _, group := range []map[string]func(*specs.Spec){privilegedProcess(), privilegedHost(), privilegedMounts(), privilegedSeccomp()} {
		maps.Copy(cases, group)
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

// privilegedProcess returns the spec changes of testPrivilegedRefused that widen the
// process's capabilities or add hooks (which run on the host).
func privilegedProcess() map[string]func(*specs.Spec) {
	return map[string]func(*specs.Spec){
		"CAP_SYS_ADMIN": func(s *specs.Spec) {
			s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN")
			s.Process.Capabilities.Effective = append(s.Process.Capabilities.Effective, "CAP_SYS_ADMIN")
			s.Process.Capabilities.Permitted = append(s.Process.Capabilities.Permitted, "CAP_SYS_ADMIN")
		},
		"ambient CAP_SYS_MODULE": func(s *specs.Spec) {
			s.Process.Capabilities.Ambient = []string{"CAP_SYS_MODULE"}
		},
		"no capability sets (all kept)": func(s *specs.Spec) { s.Process.Capabilities = nil },
		"createRuntime hook": func(s *specs.Spec) {
			s.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "touch /tmp/berth-hook-ran"}}}}
		},
		"poststop hook":       func(s *specs.Spec) { s.Hooks = &specs.Hooks{Poststop: []specs.Hook{{Path: "/bin/true"}}} },
		"AppArmor unconfined": func(s *specs.Spec) { s.Process.ApparmorProfile = "unconfined" },
		"SELinux spc_t":       func(s *specs.Spec) { s.Process.SelinuxLabel = "system_u:system_r:spc_t:s0" },
		"oom_score_adj below zero (the host's processes die first)": func(s *specs.Spec) {
			adj := -1000
			s.Process.OOMScoreAdj = &adj
		},
	}
}

// privilegedHost returns the spec changes of testPrivilegedRefused that share the
// host's namespaces, cgroups or devices.
func privilegedHost() map[string]func(*specs.Spec) {
	return map[string]func(*specs.Spec){
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
	}
}

// privilegedMounts returns the spec changes of testPrivilegedRefused that expose
// kernel interfaces (writable or extra sysfs and proc, unmasked or writable
// proc paths) or reach the host's mounts (a bind whose propagation is
// shared).
func privilegedMounts() map[string]func(*specs.Spec) {
	return map[string]func(*specs.Spec){
		"bind propagating to the host (rshared)": func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/shared", Type: "bind", Source: os.TempDir(), Options: []string{"rbind", "rshared"}})
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
		"sysfs outside /sys": func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/sys2", Type: "sysfs", Source: "sysfs", Options: []string{"ro", "nosuid", "nodev", "noexec"}})
		},
		"sysfs ro then rw": func(s *specs.Spec) {
			for i, m := range s.Mounts {
				if m.Type == "sysfs" || m.Type == "cgroup" {
					s.Mounts[i].Options = append(s.Mounts[i].Options, "rw")
				}
			}
		},
	}
}

// privilegedSeccomp returns the spec changes of testPrivilegedRefused that loosen
// the seccomp filter.
func privilegedSeccomp() map[string]func(*specs.Spec) {
	return map[string]func(*specs.Spec){
		"unconfined seccomp": func(s *specs.Spec) {
			s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActAllow}
		},
		"seccomp allowing unshare and mount": func(s *specs.Spec) {
			s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{
				{Names: []string{"read", "write", "exit_group", "execve", "unshare", "mount"}, Action: specs.ActAllow}}}
		},
		"seccomp admitting the 32-bit ABI": func(s *specs.Spec) {
			sc, err := runtime.DefaultSeccompProfile(s)
			if err != nil {
				panic(err)
			}
			sc.Architectures = append(sc.Architectures, specs.ArchX86, specs.ArchX32)
			s.Linux.Seccomp = sc
		},
	}
}
