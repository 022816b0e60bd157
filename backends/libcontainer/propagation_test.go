package libcontainer_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/runtimetest"
	"github.com/berthrun/berth/volume"
)

// execIn runs args in c and returns its exit code and output.
func execIn(ctx context.Context, t *testing.T, c *runtime.Container, args ...string) (int, string) {
	t.Helper()
	var out fixture.SyncBuffer
	p, err := c.Exec(ctx, &runtime.ProcessSpec{Args: args}, runtime.IO{Stdout: &out, Stderr: &out})
	require.NoError(t, err)
	st, err := p.Wait(ctx)
	require.NoError(t, err)
	return st.Code, out.String()
}

// detach detaches whatever is mounted at dir, private first so that the
// detach reaches no peer.
func detach(dir string) {
	for {
		if ok, err := mountinfo.Mounted(dir); err != nil || !ok {
			return
		}
		_ = unix.Mount("", dir, "", unix.MS_PRIVATE|unix.MS_REC, "")
		if unix.Unmount(dir, unix.MNT_DETACH) != nil {
			return
		}
	}
}

// requireNoVolumes checks that nothing of the runtime's volumes is left
// on the host under root: no record, nothing mounted.
func requireNoVolumes(t *testing.T, root string) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, "volumes", "records"))
	require.NoError(t, err)
	require.Empty(t, ents, "volume records left")
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(filepath.Join(root, "volumes")))
	require.NoError(t, err)
	require.Empty(t, ms, "volume mounts left")
}

// hostMounts returns the mount points of the host's mount namespace.
func hostMounts(t *testing.T) map[string]bool {
	t.Helper()
	ms, err := mountinfo.GetMounts(nil)
	require.NoError(t, err)
	out := map[string]bool{}
	for _, m := range ms {
		out[m.Mountpoint] = true
	}
	return out
}

// Kubernetes' mount propagation, as critest checks it ("runtime should
// support mount propagation"): a privileged container binds a host path
// that is a mount of its own, shared (private for rprivate); the host
// then mounts under it, the container mounts under its bind. With rslave
// and rshared the host's mount reaches the container, with rshared the
// container's reaches the host; with rprivate neither does. The host then
// takes its mounts down and removes their directories while the
// container runs (nothing of berth's holds them), and the container's
// delete leaves nothing of berth's.
func TestMountPropagation(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root, rootfs := filepath.Join(fixture.TempDir(t), "state"), fixture.BusyboxTB(t)
	rt := openOn(t, root, runtime.SecurityPolicy{AllowPrivileged: true})
	for _, prop := range []string{"rprivate", "rslave", "rshared"} {
		t.Run(prop, func(t *testing.T) {
			base := fixture.TempDir(t)
			src, flags := filepath.Join(base, "mnt"), filepath.Join(base, "propagationSrcDir")
			hostMnt, containerMnt := filepath.Join(src, "propagationMnt"), filepath.Join(src, "containerMntPoint")
			require.NoError(t, os.MkdirAll(hostMnt, 0o700))
			require.NoError(t, os.MkdirAll(flags, 0o700))
			require.NoError(t, os.WriteFile(filepath.Join(flags, "flagFile"), nil, 0o600))
			require.NoError(t, unix.Mount(src, src, "bind", unix.MS_BIND|unix.MS_REC, ""))
			t.Cleanup(func() { detach(hostMnt); detach(containerMnt); detach(src) })
			how := uintptr(unix.MS_SHARED)
			if prop == "rprivate" {
				how = unix.MS_PRIVATE
			}
			require.NoError(t, unix.Mount("", src, "", how|unix.MS_REC, ""))

			spec := runtime.DefaultSpec(rootfs, "/bin/sleep", "1000")
			c := spec.Process.Capabilities
			c.Bounding, c.Effective, c.Permitted = append(c.Bounding, "CAP_SYS_ADMIN"), append(c.Effective, "CAP_SYS_ADMIN"), append(c.Permitted, "CAP_SYS_ADMIN")
			spec.Mounts = append(spec.Mounts, specs.Mount{Destination: src, Type: "bind", Source: src, Options: []string{"rbind", prop}})
			before := hostMounts(t)
			ctr, err := rt.Create(ctx, runtimetest.NewID("prop"), &runtime.Config{Spec: spec})
			require.NoError(t, err)
			t.Cleanup(func() { _ = ctr.Delete(context.Background(), runtime.DeleteOptions{Force: true}) })
			require.NoError(t, ctr.Start(ctx))
			for m := range hostMounts(t) {
				require.Truef(t, before[m] || !strings.HasPrefix(m, base) && !strings.HasPrefix(m, rootfs),
					"the container's mount %s reached the host", m)
			}
			code, out := execIn(ctx, t, ctr, "sh", "-c", "mkdir -p /probe && mount -t tmpfs tmpfs /probe")
			require.Equal(t, 0, code, out)
			for m := range hostMounts(t) {
				require.Truef(t, before[m] || !strings.HasPrefix(m, base) && !strings.HasPrefix(m, rootfs),
					"the container's mount %s reached the host", m)
			}

			require.NoError(t, unix.Mount(flags, hostMnt, "bind", unix.MS_BIND|unix.MS_REC, ""))
			code, out = execIn(ctx, t, ctr, "ls", "-A", hostMnt)
			require.Equal(t, 0, code, out)
			if prop == "rprivate" {
				require.Empty(t, out, "the host's mount reached the container")
			} else {
				require.Equal(t, "flagFile\n", out, "the host's mount did not reach the container")
			}
			code, out = execIn(ctx, t, ctr, "sh", "-c", "mkdir -p "+containerMnt+" && mount --bind /etc "+containerMnt)
			require.Equal(t, 0, code, out)
			ents, err := os.ReadDir(containerMnt)
			require.NoError(t, err)
			require.Equal(t, prop == "rshared", len(ents) > 0, "the container's mount on the host: %v", ents)

			// critest's cleanup, while the container runs.
			require.NoError(t, unix.Unmount(hostMnt, unix.MNT_DETACH))
			require.NoError(t, unix.Unmount(src, unix.MNT_DETACH))
			for _, d := range []string{hostMnt, containerMnt, src} {
				require.NoError(t, os.Remove(d), "the host removes %s", d)
			}
			require.NoError(t, ctr.Delete(ctx, runtime.DeleteOptions{Force: true}))
			requireNoVolumes(t, root)
		})
	}
}

// OCI's "ro" on a bind is read-only at the bind alone: a tmpfs the host
// mounted under the source stays writable in the container (critest's
// "should support non-recursive readonly mounts", Kubernetes' default);
// "rro" is read-only all the way. The host can take its tmpfs down and
// remove its directory while the container runs, or after its delete,
// and nothing of berth's is left.
func TestReadOnlyBindSubmounts(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root, rootfs := filepath.Join(fixture.TempDir(t), "state"), fixture.BusyboxTB(t)
	rt := openOn(t, root, runtime.SecurityPolicy{})
	for _, opt := range []string{"ro", "rro"} {
		for _, when := range []string{"while it runs", "after the delete"} {
			t.Run(opt+" "+when, func(t *testing.T) {
				hostPath := fixture.TempDir(t)
				tmpfs := filepath.Join(hostPath, "tmpfs")
				require.NoError(t, os.Mkdir(tmpfs, 0o700))
				require.NoError(t, unix.Mount("none", tmpfs, "tmpfs", 0, ""))
				t.Cleanup(func() { detach(tmpfs) })
				spec := runtime.DefaultSpec(rootfs, "/bin/sleep", "1000")
				spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/mnt", Type: "bind", Source: hostPath, Options: []string{"rbind", opt}})
				ctr, err := rt.Create(ctx, runtimetest.NewID("ro"), &runtime.Config{Spec: spec})
				require.NoError(t, err)
				t.Cleanup(func() { _ = ctr.Delete(context.Background(), runtime.DeleteOptions{Force: true}) })
				require.NoError(t, ctr.Start(ctx))

				code, out := execIn(ctx, t, ctr, "touch", "/mnt/tmpfs/file")
				if opt == "ro" {
					require.Equal(t, 0, code, "the submount is writable: %s", out)
				} else {
					require.NotEqual(t, 0, code)
					require.Contains(t, out, "Read-only file system")
				}
				code, out = execIn(ctx, t, ctr, "touch", "/mnt/file")
				require.NotEqual(t, 0, code)
				require.Contains(t, out, "Read-only file system")
				code, out = execIn(ctx, t, ctr, "sh", "-c", "grep ' /mnt/tmpfs ' /proc/self/mountinfo")
				require.Equal(t, 0, code, out)
				require.Contains(t, out, "nosuid", "confined: %s", out)
				require.Contains(t, out, "nodev", "confined: %s", out)

				if when == "while it runs" {
					require.NoError(t, unix.Unmount(tmpfs, unix.MNT_DETACH))
					require.NoError(t, os.Remove(tmpfs), "the host removes its tmpfs's directory")
				}
				require.NoError(t, ctr.Delete(ctx, runtime.DeleteOptions{Force: true}))
				requireNoVolumes(t, root)
				if when == "after the delete" {
					require.NoError(t, unix.Unmount(tmpfs, 0), "the host unmounts its tmpfs")
					require.NoError(t, os.Remove(tmpfs), "the host removes its tmpfs's directory")
				}
				require.NoError(t, os.Remove(hostPath))
			})
		}
	}
}

// Shared propagation needs the AllowPrivileged policy: refused without it
// (permission-denied), for a spec's bind as for a volume, leaving nothing
// behind. Slave propagation needs no switch; a hot attach takes neither
// (not-implemented).
func TestSharedPropagationRefused(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root, rootfs := filepath.Join(fixture.TempDir(t), "state"), fixture.BusyboxTB(t)
	rt := openOn(t, root, runtime.SecurityPolicy{})
	src := fixture.TempDir(t)
	require.NoError(t, unix.Mount(src, src, "bind", unix.MS_BIND|unix.MS_REC, ""))
	t.Cleanup(func() { detach(src) })
	require.NoError(t, unix.Mount("", src, "", unix.MS_SHARED|unix.MS_REC, ""))

	spec := runtime.DefaultSpec(rootfs, "/bin/sleep", "1000")
	spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/mnt", Type: "bind", Source: src, Options: []string{"rbind", "rshared"}})
	id := runtimetest.NewID("shared")
	_, err := rt.Create(ctx, id, &runtime.Config{Spec: spec})
	require.Truef(t, errdefs.IsPermissionDenied(err), "%v", err)
	vol := &runtime.Config{Spec: runtime.DefaultSpec(rootfs, "/bin/sleep", "1000"),
		Volumes: []volume.Spec{{Source: src, Destination: "/mnt", Propagation: volume.PropagationShared}}}
	_, err = rt.Create(ctx, id, vol)
	require.Truef(t, errdefs.IsPermissionDenied(err), "%v", err)
	_, err = rt.Get(ctx, id)
	require.True(t, errdefs.IsNotFound(err))
	_, err = os.Stat(filepath.Join(root, "containers", id))
	require.True(t, os.IsNotExist(err), "the refused create left its state")
	requireNoVolumes(t, root)

	vol.Volumes[0].Propagation = volume.PropagationSlave
	ctr, err := rt.Create(ctx, id, vol)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ctr.Delete(context.Background(), runtime.DeleteOptions{Force: true}) })
	require.NoError(t, ctr.Start(ctx))
	err = ctr.AttachVolume(ctx, volume.Spec{Source: src, Destination: "/hot", Propagation: volume.PropagationSlave})
	require.Truef(t, errdefs.IsNotImplemented(err), "%v", err)
	later := filepath.Join(src, "later")
	require.NoError(t, os.Mkdir(later, 0o755))
	require.NoError(t, unix.Mount("tmpfs", later, "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { detach(later) })
	code, out := execIn(ctx, t, ctr, "sh", "-c", "grep ' /mnt/later ' /proc/self/mountinfo")
	require.Equal(t, 0, code, "the host's later mount in the container: %s", out)
	require.True(t, strings.Contains(out, "master:"), out)
	require.NoError(t, ctr.Delete(ctx, runtime.DeleteOptions{Force: true}))
	requireNoVolumes(t, root)
	require.NoError(t, unix.Unmount(later, 0))
	require.NoError(t, os.Remove(later))
}
