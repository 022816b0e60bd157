package runtimetest

import (
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/volume"
)

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
