package volume

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fixture"
)

// bindAt binds src at dst (a directory made for it), recursively, and
// gives the bind propagation prop (MS_SHARED, MS_SLAVE or MS_PRIVATE), as
// critest and the kubelet make their host paths. The test's cleanup
// detaches it, private first so that the detach reaches no peer.
func bindAt(t *testing.T, src, dst string, prop uintptr) {
	t.Helper()
	require.NoError(t, os.MkdirAll(dst, 0o755))
	require.NoError(t, unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""))
	t.Cleanup(func() { detachTree(dst) })
	require.NoError(t, unix.Mount("", dst, "", prop|unix.MS_REC, ""))
}

// detachTree detaches whatever is mounted at dir, without propagating the
// unmount to any peer.
func detachTree(dir string) {
	for mounted(dir) {
		_ = unix.Mount("", dir, "", unix.MS_PRIVATE|unix.MS_REC, "")
		if unix.Unmount(dir, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW) != nil {
			return
		}
	}
}

// mountTmpfs mounts a small tmpfs at dir (made for it), as the host's own
// submount under a source; the test's cleanup detaches it.
func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { detachTree(dir) })
}

func mounted(path string) bool {
	ok, err := mountinfo.Mounted(path)
	return err == nil && ok
}

// optional returns the value of mi's optional field name (shared, master),
// or "".
func optional(mi *mountinfo.Info, name string) string {
	for _, f := range strings.Fields(mi.Optional) {
		if v, ok := strings.CutPrefix(f, name+":"); ok {
			return v
		}
	}
	return ""
}

// writable tries to create a file in dir.
func writable(dir string) error {
	return os.WriteFile(filepath.Join(dir, "probe"), []byte("x"), 0o644)
}

// A directory's propagation, end to end on the host: berth's mount of the
// source is private, a slave or a peer of the source's mount as asked,
// whatever the propagation of the state directory's own mount (a shared
// one, as under systemd, makes every mount moved under it shared); mounts
// the host makes under the source later reach it (slave, shared), and
// mounts made under it (where a container's bind, its copy, mounts) reach
// the host (shared). The mounts under the source are confined (nosuid,
// nodev) in berth's copy, never on the host. A detach leaves the host's
// own mounts under the source where they are, a shared one included (an
// unmount of a peer's submounts propagates to the source), and the host
// can unmount them and remove their directories.
func TestDirectoryPropagation(t *testing.T) {
	fixture.RequireRoot(t)
	ctx := context.Background()
	for _, stateShared := range []bool{false, true} {
		for _, prop := range []Propagation{PropagationPrivate, PropagationSlave, PropagationShared} {
			name := string(prop)
			if stateShared {
				name += " state on a shared mount"
			}
			t.Run(name, func(t *testing.T) {
				base := fixture.TempDir(t)
				state := filepath.Join(base, "state")
				require.NoError(t, os.Mkdir(state, 0o711))
				if stateShared {
					bindAt(t, state, state, unix.MS_SHARED)
				}
				dir := filepath.Join(state, "volumes")
				m, err := OpenManager(dir, DefaultPolicy(), nil)
				require.NoError(t, err)
				src := filepath.Join(base, "src")
				require.NoError(t, os.Mkdir(src, 0o755))
				bindAt(t, src, src, unix.MS_SHARED)
				pre := filepath.Join(src, "pre")
				mountTmpfs(t, pre)

				att, err := m.Attach(ctx, "c1", Spec{Source: src, Destination: "/data", Propagation: prop}, AttachOptions{})
				require.NoError(t, err)
				mp := att.Mount.Source
				require.Contains(t, att.Mount.Options, "r"+string(prop))
				top, group := mountOf(t, mp), optional(mountOf(t, src), "shared")
				require.NotEmpty(t, group)
				switch prop {
				case PropagationPrivate:
					require.Empty(t, top.Optional, "private")
				case PropagationSlave:
					require.Equal(t, "master:"+group, top.Optional, "a slave of the source's peer group alone")
				case PropagationShared:
					require.Equal(t, "shared:"+group, top.Optional, "a peer of the source")
				}
				sub := mountOf(t, filepath.Join(mp, "pre"))
				require.Subset(t, strings.Split(sub.Options, ","), []string{"nosuid", "nodev"}, "the submount's copy is confined")
				require.NotContains(t, strings.Split(mountOf(t, pre).Options, ","), "nosuid", "the host's own mount is not")

				later := filepath.Join(src, "later")
				mountTmpfs(t, later)
				require.Equal(t, prop != PropagationPrivate, mounted(filepath.Join(mp, "later")), "the host's later mount in berth's")
				back := filepath.Join(src, "back")
				require.NoError(t, os.Mkdir(back, 0o755))
				require.NoError(t, unix.Mount("tmpfs", filepath.Join(mp, "back"), "tmpfs", 0, "size=1m"))
				t.Cleanup(func() { detachTree(back) })
				require.Equal(t, prop == PropagationShared, mounted(back), "a mount under berth's on the host")

				require.NoError(t, m.Detach(ctx, "c1", "/data"))
				requireClean(t, dir, "")
				require.True(t, mounted(src), "the source's mount stays")
				require.True(t, mounted(pre), "the host's mount under the source stays")
				require.True(t, mounted(later), "the host's later mount stays")
				require.Equal(t, prop == PropagationShared, mounted(back), "what propagated to the host is the host's")
				for _, d := range []string{pre, later, back} {
					if mounted(d) {
						require.NoError(t, unix.Unmount(d, 0), "the host unmounts %s", d)
					}
					require.NoError(t, os.Remove(d), "the host removes %s", d)
				}
			})
		}
	}
}

// Propagation needs a source that propagates: slave a shared mount or a
// slave of one, shared a shared one. Anything else is refused before any
// mount (failed-precondition), leaving nothing behind.
func TestPropagationNeedsAPropagatingSource(t *testing.T) {
	m, dir := newManager(t, DefaultPolicy())
	ctx := context.Background()
	base := fixture.TempDir(t)
	private, shared, slave := filepath.Join(base, "private"), filepath.Join(base, "shared"), filepath.Join(base, "slave")
	bindAt(t, base, private, unix.MS_PRIVATE)
	require.NoError(t, os.Mkdir(shared, 0o755))
	bindAt(t, shared, shared, unix.MS_SHARED)
	bindAt(t, shared, slave, unix.MS_SLAVE)
	require.Contains(t, mountOf(t, slave).Optional, "master:")
	for _, tc := range []struct {
		src  string
		prop Propagation
		ok   bool
	}{
		{private, PropagationSlave, false}, {private, PropagationShared, false}, {slave, PropagationShared, false},
		{private, PropagationPrivate, true}, {slave, PropagationSlave, true}, {shared, PropagationSlave, true}, {shared, PropagationShared, true},
	} {
		_, err := m.Attach(ctx, "c1", Spec{Source: tc.src, Destination: "/data", Propagation: tc.prop}, AttachOptions{})
		if tc.ok {
			require.NoErrorf(t, err, "%s from %s", tc.prop, tc.src)
			require.NoError(t, m.Detach(ctx, "c1", "/data"))
		} else {
			require.Truef(t, errdefs.IsFailedPrecondition(err), "%s from %s: %v", tc.prop, tc.src, err)
			require.Contains(t, err.Error(), "/data")
		}
		requireClean(t, dir, "")
	}
}

// Read-only is recursive unless asked otherwise: with
// NonRecursiveReadOnly (OCI's "ro" on a bind) the mounts under the source
// keep their own access, still nosuid and nodev. The options are for
// directories and files only.
func TestNonRecursiveReadOnly(t *testing.T) {
	m, dir := newManager(t, DefaultPolicy())
	ctx := context.Background()
	src := fixture.TempDir(t)
	mountTmpfs(t, filepath.Join(src, "sub"))
	top, err := m.Attach(ctx, "c1", Spec{Source: src, Destination: "/top", ReadOnly: true, NonRecursiveReadOnly: true}, AttachOptions{})
	require.NoError(t, err)
	all, err := m.Attach(ctx, "c1", Spec{Source: src, Destination: "/all", ReadOnly: true}, AttachOptions{})
	require.NoError(t, err)
	require.Contains(t, top.Mount.Options, "ro")
	require.ErrorIs(t, writable(top.Mount.Source), unix.EROFS)
	require.ErrorIs(t, writable(all.Mount.Source), unix.EROFS)
	require.NoError(t, writable(filepath.Join(top.Mount.Source, "sub")), "the submount keeps its access")
	require.ErrorIs(t, writable(filepath.Join(all.Mount.Source, "sub")), unix.EROFS, "read-only down to every submount")
	for _, mp := range []string{top.Mount.Source, all.Mount.Source} {
		require.Subset(t, strings.Split(mountOf(t, filepath.Join(mp, "sub")).Options, ","), []string{"nosuid", "nodev"})
	}

	img := makeImage(t, t.TempDir(), "ext4")
	for _, sp := range []Spec{
		{Source: src, Destination: "/x", NonRecursiveReadOnly: true},
		{Source: src, Destination: "/x", Propagation: "sideways"},
		{Destination: "/x", TmpfsSize: 1 << 20, ReadOnly: true, NonRecursiveReadOnly: true},
		{Destination: "/x", TmpfsSize: 1 << 20, Propagation: PropagationSlave},
		{Source: img, Destination: "/x", Propagation: PropagationShared},
		{Source: img, Destination: "/x", ReadOnly: true, NonRecursiveReadOnly: true},
	} {
		_, err := m.Attach(ctx, "c2", sp, AttachOptions{})
		require.Truef(t, errdefs.IsInvalidArgument(err), "%+v: %v", sp, err)
	}
	require.NoError(t, m.DetachAll(ctx, "c1"))
	requireClean(t, dir, img)
}

// Once the container's engine has bound them into the container's own
// mount namespace, ReleaseHostBinds takes berth's mounts of an owner's
// directories off the host: the host keeps no copy of the mounts under a
// source, so it can unmount one and remove its directory while the
// container runs (a copy in the host's namespace makes the rmdir fail
// with EBUSY). The records stay until the detach; block and image host
// mounts, and attachments not yet complete, stay mounted. A shared
// source's own submounts stay where they are.
func TestReleaseHostBinds(t *testing.T) {
	ctx := context.Background()
	for _, prop := range []Propagation{PropagationPrivate, PropagationShared} {
		t.Run(string(prop), func(t *testing.T) {
			m, dir := newManager(t, DefaultPolicy())
			src := fixture.TempDir(t)
			bindAt(t, src, src, unix.MS_SHARED)
			sub := filepath.Join(src, "sub")
			mountTmpfs(t, sub)
			img := makeImage(t, t.TempDir(), "ext4")
			bind, err := m.Attach(ctx, "c1", Spec{Source: src, Destination: "/data", Propagation: prop}, AttachOptions{})
			require.NoError(t, err)
			vol, err := m.Attach(ctx, "c1", Spec{Source: img, Destination: "/vol"}, AttachOptions{})
			require.NoError(t, err)
			pending, err := m.Attach(ctx, "c1", Spec{Source: src, Destination: "/hot"}, AttachOptions{Pending: true})
			require.NoError(t, err)
			require.True(t, mounted(filepath.Join(bind.Mount.Source, "sub")))

			require.NoError(t, m.ReleaseHostBinds("c1"))
			require.False(t, mounted(bind.Mount.Source), "berth's mount of the directory is gone")
			require.True(t, mounted(vol.Mount.Source), "the image's host mount stays")
			require.True(t, mounted(pending.Mount.Source), "an attachment not complete stays")
			require.True(t, mounted(src) && mounted(sub), "the host's own mounts stay")
			require.NoError(t, m.Complete("c1", "/hot"))
			require.NoError(t, m.ReleaseHostBinds("c1"))
			require.False(t, mounted(pending.Mount.Source))
			specs, err := m.Attachments("c1")
			require.NoError(t, err)
			require.Len(t, specs, 3, "still attached")

			require.NoError(t, unix.Unmount(sub, 0))
			require.NoError(t, os.Remove(sub), "the host removes its submount's directory")
			require.NoError(t, m.DetachAll(ctx, "c1"))
			requireClean(t, dir, img)
		})
	}
}

// A process killed while it attaches a shared directory leaves nothing
// once the next Open has run, and the undo takes nothing of the host's:
// the source's submounts stay.
func TestCrashMidDirectoryAttach(t *testing.T) {
	fixture.RequireRoot(t)
	for _, step := range []string{"mounted", "complete"} {
		t.Run(step, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "volumes")
			src := fixture.TempDir(t)
			bindAt(t, src, src, unix.MS_SHARED)
			sub := filepath.Join(src, "sub")
			mountTmpfs(t, sub)
			cmd := exec.Command("/proc/self/exe", "-test.run=^$")
			cmd.Env = append(os.Environ(), crashEnv+"="+step, "BERTH_VOLUME_DIR="+dir, "BERTH_VOLUME_SOURCE="+src,
				"BERTH_VOLUME_PROPAGATION="+string(PropagationShared))
			out, err := cmd.StdoutPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			line, _ := bufio.NewReader(out).ReadString('\n')
			require.Equal(t, "at "+step+"\n", line)
			require.NoError(t, cmd.Process.Kill())
			_ = cmd.Wait()
			ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
			require.NoError(t, err)
			require.NotEmpty(t, ms, "the killed process did mount")

			_, err = OpenManager(dir, DefaultPolicy(), func(string) bool { return false })
			require.NoError(t, err)
			requireClean(t, dir, "")
			require.True(t, mounted(src) && mounted(sub), "the host's mounts stay")
		})
	}
}
