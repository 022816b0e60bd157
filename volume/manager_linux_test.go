package volume

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/internal/loop"
)

// The crash test re-executes the test binary as a process that attaches a
// volume and stops at a given step, to be killed there.
const crashEnv = "BERTH_VOLUME_CRASH_AT"

func TestMain(m *testing.M) {
	if step := os.Getenv(crashEnv); step != "" {
		os.Exit(crashChild(step))
	}
	if prop := os.Getenv(nsHolderEnv); prop != "" {
		os.Exit(nsHolder(prop))
	}
	os.Exit(m.Run())
}

// The namespace tests re-execute the test binary as a process that lives
// in a mount namespace of its own, made while a volume is mounted.
const nsHolderEnv = "BERTH_VOLUME_NS_HOLDER"

// nsHolder runs in a new mount namespace, cloned with CLONE_NEWNS, so it
// has a copy of every host mount, the volume's at BERTH_VOLUME_MP included.
// how is what it then does, and it stays until its stdin closes:
//   - peer, slave, private: it sets the propagation of its copies as
//     unshare(CLONE_NEWNS) leaves it, as runc makes it, or as unshare(1)
//     and Go's Unshareflags make it;
//   - container: it is a container's mount namespace that outlives the
//     container, as when a thread of the runtime that set it up is still
//     in it: runc's slave propagation, the volume bind-mounted (private,
//     as the attachment asks) at BERTH_VOLUME_BIND, the copy of the host
//     mount gone with the old root.
func nsHolder(how string) int {
	mp := os.Getenv("BERTH_VOLUME_MP")
	err := func() error {
		var flags uintptr
		switch how {
		case "slave", "container":
			flags = unix.MS_SLAVE | unix.MS_REC
		case "private":
			flags = unix.MS_PRIVATE | unix.MS_REC
		}
		if flags != 0 {
			if err := unix.Mount("", "/", "", flags, ""); err != nil {
				return fmt.Errorf("propagation: %w", err)
			}
		}
		if how != "container" {
			return nil
		}
		bind := os.Getenv("BERTH_VOLUME_BIND")
		if err := unix.Mount(mp, bind, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind: %w", err)
		}
		if err := unix.Mount("", bind, "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("private: %w", err)
		}
		return unix.Unmount(mp, 0)
	}()
	if err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("holding")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// holdNamespace starts nsHolder doing how with the host mount mp (and bind
// for a container). The returned func ends it and waits until it is gone,
// and its namespace with it.
func holdNamespace(t *testing.T, how, mp, bind string) (pid int, end func()) {
	t.Helper()
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), nsHolderEnv+"="+how, "BERTH_VOLUME_MP="+mp, "BERTH_VOLUME_BIND="+bind)
	// Cloneflags, not Unshareflags: Go would make every copy private.
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	var once sync.Once
	end = func() {
		once.Do(func() {
			stdin.Close()
			_ = cmd.Wait()
		})
	}
	t.Cleanup(end)
	line, _ := bufio.NewReader(out).ReadString('\n')
	require.Equal(t, "holding\n", line)
	return cmd.Process.Pid, end
}

// mountedIn reports whether something is mounted at path in pid's mount
// namespace.
func mountedIn(t *testing.T, pid int, path string) bool {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	require.NoError(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}

func crashChild(step string) int {
	testHook = func(s string) {
		if s == step {
			fmt.Println("at", s)
			time.Sleep(time.Hour)
		}
	}
	var sp Spec
	sp.Source, sp.Destination = os.Getenv("BERTH_VOLUME_SOURCE"), "/data"
	if os.Getenv("BERTH_VOLUME_RAW") != "" {
		sp.Mode = ModeRawBlock
	}
	sp.Propagation = Propagation(os.Getenv("BERTH_VOLUME_PROPAGATION"))
	m, err := OpenManager(os.Getenv("BERTH_VOLUME_DIR"), DefaultPolicy(), nil)
	if err == nil {
		_, err = m.Attach(context.Background(), "victim", sp, AttachOptions{UserNamespace: true, RootUID: 100000, RootGID: 100000})
	}
	fmt.Println("attach returned", err)
	return 1
}

// snapshot is the host state a refused or undone attach must leave as it
// was: the mount table, and loop devices backed by the image.
type snapshot struct {
	mounts string
	loops  []string
}

func takeSnapshot(t *testing.T, image string) snapshot {
	t.Helper()
	bound, err := loop.Backing()
	require.NoError(t, err)
	var loops []string
	for dev, file := range bound {
		if file == image {
			loops = append(loops, dev)
		}
	}
	// Other test packages mount containers meanwhile: what an attach of
	// image could add is a mount of one of its loop devices.
	ms, err := mountinfo.GetMounts(func(i *mountinfo.Info) (bool, bool) {
		return !strings.HasPrefix(i.Source, "/dev/loop") || !slices.Contains(loops, i.Source), false
	})
	require.NoError(t, err)
	var mounts []string
	for _, m := range ms {
		mounts = append(mounts, m.Source+" "+m.Mountpoint)
	}
	return snapshot{strings.Join(mounts, "\n"), loops}
}

// requireClean checks that nothing of dir's is mounted, no loop device is
// backed by image, and no record, mount point or node is left.
func requireClean(t *testing.T, dir, image string) {
	t.Helper()
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	require.NoError(t, err)
	require.Empty(t, mounts, "mounts left under %s", dir)
	require.Empty(t, takeSnapshot(t, image).loops, "loop devices left for %s", image)
	for _, sub := range []string{"records", "mnt", "dev"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		require.NoError(t, err)
		require.Empty(t, ents, "left in %s", sub)
	}
}

func newManager(t *testing.T, p Policy) (*Manager, string) {
	fixture.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "volumes")
	m, err := OpenManager(dir, p, nil)
	require.NoError(t, err)
	return m, dir
}

// Off-whitelist, signature-less and ambiguous images are refused before
// any mount: the mount table is unchanged and no loop device is left.
func TestAttachRefusedBeforeMount(t *testing.T) {
	m, dir := newManager(t, DefaultPolicy())
	imgs := t.TempDir()
	for _, kind := range []string{"btrfs", "vfat", "squashfs", "zeros", "ext4+iso9660", "crypto_LUKS", "swap", "dos"} {
		t.Run(kind, func(t *testing.T) {
			img := makeImage(t, imgs, kind)
			before := takeSnapshot(t, img)
			_, err := m.Attach(context.Background(), "c1", Spec{Source: img, Destination: "/data"}, AttachOptions{})
			require.Truef(t, errdefs.IsInvalidArgument(err), "%s: %v", kind, err)
			require.Contains(t, err.Error(), "/data", "the error names the volume")
			require.Equal(t, before, takeSnapshot(t, img), "mount table or loop devices changed")
			requireClean(t, dir, img)
		})
	}
}

// An ext4 image cut shorter than its superblock says is refused for its
// geometry before the mount syscall (which would refuse it too, with the
// kernel's "bad geometry"): no mount, no loop device, no record.
func TestAttachTruncatedRefusedBeforeMount(t *testing.T) {
	m, dir := newManager(t, DefaultPolicy())
	img := makeImage(t, t.TempDir(), "ext4")
	require.NoError(t, os.Truncate(img, 16<<20))
	var steps []string
	testHook = func(step string) { steps = append(steps, step) }
	defer func() { testHook = nil }()
	before := takeSnapshot(t, img)
	_, err := m.Attach(context.Background(), "c1", Spec{Source: img, Destination: "/data"}, AttachOptions{})
	require.Truef(t, errdefs.IsInvalidArgument(err), "%v", err)
	require.ErrorIs(t, err, ErrGeometry)
	require.EqualError(t, err, "volume /data: ext4: superblock claims 32768 blocks of 1024 bytes (33554432 bytes) but the device holds 16777216 bytes: bad geometry: invalid argument")
	require.NotContains(t, steps, "mount", "refused before the mount syscall")
	require.Contains(t, steps, "loop-attached", "the loop device is what was probed")
	require.Equal(t, before, takeSnapshot(t, img), "mount table or loop devices changed")
	requireClean(t, dir, img)
}

func TestFsckRefusesCorruptExt4(t *testing.T) {
	p := DefaultPolicy()
	p.Fsck = true
	m, dir := newManager(t, p)
	img := makeImage(t, t.TempDir(), "ext4-corrupt")
	before := takeSnapshot(t, img)
	_, err := m.Attach(context.Background(), "c1", Spec{Source: img, Destination: "/data"}, AttachOptions{})
	require.Truef(t, errdefs.IsInvalidArgument(err), "%v", err)
	require.Contains(t, err.Error(), "check failed")
	require.Equal(t, before, takeSnapshot(t, img))
	requireClean(t, dir, img)

	// A sound image passes the same check.
	good := makeImage(t, t.TempDir(), "ext4")
	_, err = m.Attach(context.Background(), "c1", Spec{Source: good, Destination: "/data"}, AttachOptions{})
	require.NoError(t, err)
	require.NoError(t, m.DetachAll(context.Background(), "c1"))
	requireClean(t, dir, good)
}

func mountOf(t *testing.T, path string) *mountinfo.Info {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(path))
	require.NoError(t, err)
	require.Len(t, ms, 1, "%s is not a mount point", path)
	return ms[0]
}

func TestHostMountExt4(t *testing.T) {
	m, dir := newManager(t, DefaultPolicy())
	ctx := context.Background()
	img := makeImage(t, t.TempDir(), "ext4")
	att, err := m.Attach(ctx, "c1", Spec{Source: img, Destination: "/data"}, AttachOptions{})
	require.NoError(t, err)
	require.Equal(t, "ext4", att.FS.Type)
	require.NotNil(t, att.Mount)
	require.Equal(t, "/data", att.Mount.Destination)
	require.Subset(t, att.Mount.Options, []string{"nosuid", "nodev"})
	mi := mountOf(t, att.Mount.Source)
	require.Equal(t, "ext4", mi.FSType, "mounted with the probed type")
	require.Contains(t, mi.Options, "nosuid")
	require.Contains(t, mi.Options, "nodev")
	require.True(t, strings.HasPrefix(mi.Source, "/dev/loop"), "source %s", mi.Source)
	require.NoError(t, os.WriteFile(filepath.Join(att.Mount.Source, "marker"), []byte("x"), 0o644))

	_, err = m.Attach(ctx, "c1", Spec{Source: img, Destination: "/data"}, AttachOptions{})
	require.Truef(t, errdefs.IsAlreadyExists(err), "same destination twice: %v", err)
	_, err = m.Attach(ctx, "c2", Spec{Source: img, Destination: "/data"}, AttachOptions{})
	require.Truef(t, errdefs.IsFailedPrecondition(err), "a read-write volume is exclusive: %v", err)

	require.NoError(t, m.Detach(ctx, "c1", "/data"))
	requireClean(t, dir, img)
	require.True(t, errdefs.IsNotFound(m.Detach(ctx, "c1", "/data")))
}

// Read-only attachments of one source share one host mount, which stays
// until the last one goes; the mount is read-only and replays no journal.
func TestReadOnlyShared(t *testing.T) {
	m, dir := newManager(t, DefaultPolicy())
	ctx := context.Background()
	img := makeImage(t, t.TempDir(), "ext4")
	a, err := m.Attach(ctx, "c1", Spec{Source: img, Destination: "/data", ReadOnly: true}, AttachOptions{})
	require.NoError(t, err)
	b, err := m.Attach(ctx, "c2", Spec{Source: img, Destination: "/ro", ReadOnly: true}, AttachOptions{})
	require.NoError(t, err)
	require.Equal(t, a.Mount.Source, b.Mount.Source, "one host mount")
	mi := mountOf(t, a.Mount.Source)
	require.True(t, strings.HasPrefix(mi.Options, "ro"), "options %s", mi.Options)
	require.Contains(t, mi.VFSOptions, "norecovery", "ext4 mounted read-only with noload")
	require.Len(t, takeSnapshot(t, img).loops, 1)

	_, err = m.Attach(ctx, "c3", Spec{Source: img, Destination: "/rw"}, AttachOptions{})
	require.Truef(t, errdefs.IsFailedPrecondition(err), "read-write while shared read-only: %v", err)

	require.NoError(t, m.Detach(ctx, "c1", "/data"))
	mountOf(t, b.Mount.Source) // still mounted for c2
	require.NoError(t, m.DetachAll(ctx, "c2"))
	requireClean(t, dir, img)
}

func TestRawBlock(t *testing.T) {
	m, dir := newManager(t, DefaultPolicy())
	ctx := context.Background()
	img := makeImage(t, t.TempDir(), "ext4")
	_, err := m.Attach(ctx, "c1", Spec{Source: img, Destination: "/dev/xvdb", Mode: ModeRawBlock}, AttachOptions{})
	require.Truef(t, errdefs.IsFailedPrecondition(err), "raw block without a user namespace: %v", err)
	requireClean(t, dir, img)

	att, err := m.Attach(ctx, "c1", Spec{Source: img, Destination: "/dev/xvdb", Mode: ModeRawBlock}, AttachOptions{UserNamespace: true, RootUID: 100000, RootGID: 100001})
	require.NoError(t, err)
	require.Nil(t, att.Mount)
	require.NotNil(t, att.Device)
	var st unix.Stat_t
	require.NoError(t, unix.Stat(att.Device.HostPath, &st))
	require.Equal(t, uint32(unix.S_IFBLK), st.Mode&unix.S_IFMT)
	require.Equal(t, uint32(100000), st.Uid, "owned by the container's root")
	require.Equal(t, uint32(100001), st.Gid)
	require.Equal(t, att.Device.Major, unix.Major(st.Rdev))
	require.Len(t, takeSnapshot(t, img).loops, 1)
	require.NoError(t, m.Detach(ctx, "c1", "/dev/xvdb"))
	requireClean(t, dir, img)

	allow := DefaultPolicy()
	allow.RawBlockWithoutUserNamespace = true
	m2, dir2 := newManager(t, allow)
	_, err = m2.Attach(ctx, "c1", Spec{Source: img, Destination: "/dev/xvdb", Mode: ModeRawBlock}, AttachOptions{})
	require.NoError(t, err, "the explicit switch allows it")
	require.NoError(t, m2.DetachAll(ctx, "c1"))
	requireClean(t, dir2, img)
}

func TestTmpfsAndDirectory(t *testing.T) {
	m, dir := newManager(t, DefaultPolicy())
	ctx := context.Background()
	att, err := m.Attach(ctx, "c1", Spec{Destination: "/scratch", TmpfsSize: 8 << 20}, AttachOptions{})
	require.NoError(t, err)
	require.Equal(t, "tmpfs", att.Mount.Type)
	require.Subset(t, att.Mount.Options, []string{"nosuid", "nodev", "size=8388608"})
	share := t.TempDir()
	att, err = m.Attach(ctx, "c1", Spec{Source: share, Destination: "/share", ReadOnly: true}, AttachOptions{})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(share, "marker"), []byte("share"), 0o644))
	require.True(t, strings.HasPrefix(att.Mount.Source, filepath.Join(dir, "mnt")+"/"), "bound from berth's own mount of the opened directory: %s", att.Mount.Source)
	b, err := os.ReadFile(filepath.Join(att.Mount.Source, "marker"))
	require.NoError(t, err)
	require.Equal(t, "share", string(b))
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(att.Mount.Source))
	require.NoError(t, err)
	require.Len(t, ms, 1)
	require.Subset(t, strings.Split(ms[0].Options, ","), []string{"ro", "nosuid", "nodev"}, "the host mount itself is confined")
	require.Subset(t, att.Mount.Options, []string{"rbind", "nosuid", "nodev", "ro"})
	_, err = m.Attach(ctx, "c1", Spec{Destination: "/nosize"}, AttachOptions{})
	require.True(t, errdefs.IsInvalidArgument(err))
	noTmpfs := Policy{Filesystems: []string{"ext4"}}
	m2, _ := newManager(t, noTmpfs)
	_, err = m2.Attach(ctx, "c1", Spec{Destination: "/scratch", TmpfsSize: 1 << 20}, AttachOptions{})
	require.True(t, errdefs.IsInvalidArgument(err), "tmpfs off the whitelist")
	require.NoError(t, m.DetachAll(ctx, "c1"))
	requireClean(t, dir, "")
}

// A process killed at any step of an attach leaves nothing once the next
// Open has run.
func TestCrashMidAttach(t *testing.T) {
	fixture.RequireRoot(t)
	for _, tc := range []struct {
		step string
		raw  bool
	}{{"loop-attached", false}, {"mounted", false}, {"complete", false}, {"loop-attached", true}, {"complete", true}} {
		name := tc.step
		if tc.raw {
			name = "raw-" + name
		}
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "volumes")
			img := makeImage(t, t.TempDir(), "ext4")
			cmd := exec.Command("/proc/self/exe", "-test.run=^$")
			cmd.Env = append(os.Environ(), crashEnv+"="+tc.step, "BERTH_VOLUME_DIR="+dir, "BERTH_VOLUME_SOURCE="+img)
			if tc.raw {
				cmd.Env = append(cmd.Env, "BERTH_VOLUME_RAW=1")
			}
			out, err := cmd.StdoutPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			line, _ := bufio.NewReader(out).ReadString('\n')
			require.Equal(t, "at "+tc.step+"\n", line)
			require.NoError(t, cmd.Process.Kill())
			_ = cmd.Wait()
			if tc.step != "loop-attached" || tc.raw {
				require.NotEmpty(t, takeSnapshot(t, img).loops, "the killed process did attach a loop device")
			}

			// The next process opens the same state: the owner "victim"
			// never became a container.
			_, err = OpenManager(dir, DefaultPolicy(), func(string) bool { return false })
			require.NoError(t, err)
			requireClean(t, dir, img)
		})
	}
}

// An owner's lock file goes with its last holder, and the lock still
// excludes: a waiter on the removed file locks the path anew, never while
// another holds it.
func TestOwnerLockFileGoesWithItsHolder(t *testing.T) {
	m, dir := newManager(t, DefaultPolicy())
	release, err := m.LockOwner("c1")
	require.NoError(t, err)
	var mu sync.Mutex
	holders := 0
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := m.LockOwner("c1")
			if !assert.NoError(t, err) {
				return
			}
			mu.Lock()
			holders++
			assert.Equal(t, 1, holders, "two holders at once")
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
			mu.Lock()
			holders--
			mu.Unlock()
			r()
		}()
	}
	time.Sleep(50 * time.Millisecond)
	_, err = m.TryLockOwner("c1")
	require.Error(t, err, "held")
	mu.Lock()
	holders++
	mu.Unlock()
	time.Sleep(5 * time.Millisecond)
	mu.Lock()
	holders--
	mu.Unlock()
	release()
	wg.Wait()
	ents, err := os.ReadDir(filepath.Join(dir, "owners"))
	require.NoError(t, err)
	require.Empty(t, ents, "no lock file outlives its holders")
}

// Sources named through links: a symlink (os-brick's /dev/disk/by-path)
// attaches what it names; a hard link to an attached image is the same
// image, and exclusive.
func TestLinkedSources(t *testing.T) {
	m, dir := newManager(t, DefaultPolicy())
	ctx := context.Background()
	imgs := t.TempDir()
	img := makeImage(t, imgs, "ext4")
	sym := filepath.Join(imgs, "by-path")
	require.NoError(t, os.Symlink(img, sym))
	_, err := m.Attach(ctx, "c1", Spec{Source: sym, Destination: "/data"}, AttachOptions{})
	require.Truef(t, errdefs.IsInvalidArgument(err), "an image named by a link: %v", err)
	att, err := m.Attach(ctx, "c1", Spec{Source: img, Destination: "/data"}, AttachOptions{})
	require.NoError(t, err)
	require.Equal(t, img, att.Spec.Source)
	hard := filepath.Join(imgs, "hard")
	require.NoError(t, os.Link(img, hard))
	_, err = m.Attach(ctx, "c2", Spec{Source: hard, Destination: "/data"}, AttachOptions{})
	require.Truef(t, errdefs.IsFailedPrecondition(err), "a hard link to an attached image: %v", err)
	_, err = m.Attach(ctx, "c2", Spec{Source: filepath.Join(imgs, "missing"), Destination: "/data"}, AttachOptions{})
	require.Truef(t, errdefs.IsNotFound(err), "%v", err)
	require.NoError(t, m.DetachAll(ctx, "c1"))
	requireClean(t, dir, img)

	// The host itself has the image on a loop device: attaching it by
	// another name is refused too.
	f, err := os.Open(img)
	require.NoError(t, err)
	defer f.Close()
	ld, err := loop.Attach(f, loop.Options{ReadOnly: true, Autoclear: true})
	require.NoError(t, err)
	defer ld.Close()
	_, err = m.Attach(ctx, "c3", Spec{Source: hard, Destination: "/data"}, AttachOptions{})
	require.Truef(t, errdefs.IsFailedPrecondition(err), "an image the host has on %s: %v", ld.Path, err)
}

// A directory source is resolved once and bound from the opened directory:
// swapping the path (or a component of it) for a link after it was
// resolved refuses the attach instead of binding where the link points.
func TestDirectorySourceSwappedForLink(t *testing.T) {
	ctx := context.Background()
	for _, swap := range []string{"leaf", "parent"} {
		t.Run(swap, func(t *testing.T) {
			m, dir := newManager(t, DefaultPolicy())
			base := t.TempDir()
			secret := filepath.Join(base, "secret")
			require.NoError(t, os.MkdirAll(secret, 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(secret, "shadow"), []byte("host secret"), 0o600))
			parent := filepath.Join(base, "tenant")
			share := filepath.Join(parent, "share")
			require.NoError(t, os.MkdirAll(share, 0o755))
			testHook = func(step string) {
				if step != "resolved" {
					return
				}
				victim, target := share, secret
				if swap == "parent" {
					victim, target = parent, base+"/evil"
					require.NoError(t, os.MkdirAll(filepath.Join(base, "evil"), 0o755))
					require.NoError(t, os.Symlink(secret, filepath.Join(base, "evil", "share")))
				}
				require.NoError(t, os.RemoveAll(victim))
				require.NoError(t, os.Symlink(target, victim))
			}
			defer func() { testHook = nil }()
			att, err := m.Attach(ctx, "c1", Spec{Source: share, Destination: "/share"}, AttachOptions{})
			if err == nil {
				_, rerr := os.Stat(filepath.Join(att.Mount.Source, "shadow"))
				require.Error(t, rerr, "the swapped-in link's target was bound")
			}
			require.Truef(t, errdefs.IsInvalidArgument(err), "%v", err)
			requireClean(t, dir, "")
		})
	}
}

// A mount namespace made while a volume is mounted (a container being set
// up copies every host mount: under load, most detaches happen while one
// exists) has its copy of the host mount at the same path. Removing the
// mount point after the unmount detaches the copies in every namespace,
// whatever their propagation, so none keeps the loop device.
func TestDetachWithACopyInAnotherNamespace(t *testing.T) {
	for _, how := range []string{"peer", "slave", "private"} {
		t.Run(how, func(t *testing.T) {
			m, dir := newManager(t, DefaultPolicy())
			ctx := context.Background()
			img := makeImage(t, t.TempDir(), "ext4")
			att, err := m.Attach(ctx, "c1", Spec{Source: img, Destination: "/data"}, AttachOptions{})
			require.NoError(t, err)
			pid, end := holdNamespace(t, how, att.Mount.Source, "")
			require.True(t, mountedIn(t, pid, att.Mount.Source))

			require.NoError(t, m.Detach(ctx, "c1", "/data"))
			requireClean(t, dir, img)
			require.False(t, mountedIn(t, pid, att.Mount.Source), "the copy went with the mount point")
			end()
		})
	}
}

// Sources on kernel interface filesystems are never volumes, whatever
// their kind: a directory there (or holding such a mount) would hand the
// container the host's devices, a file there would become its disk.
func TestKernelInterfaceSourcesRefused(t *testing.T) {
	ctx := context.Background()
	m, dir := newManager(t, DefaultPolicy())
	for _, sp := range []Spec{
		{Source: "/sys/fs/cgroup", Destination: "/c"},
		{Source: "/sys", Destination: "/s"},
		{Source: "/proc", Destination: "/p"},
		{Source: "/dev", Destination: "/d"},
		{Source: "/", Destination: "/host"},
		{Source: "/proc/self/mem", Destination: "/dev/vdb", Mode: ModeRawBlock, ReadOnly: true},
		{Source: "/proc/self/environ", Destination: "/data", ReadOnly: true},
	} {
		_, err := m.Attach(ctx, "c1", sp, AttachOptions{UserNamespace: true, RootUID: 100000, RootGID: 100000})
		require.Truef(t, errdefs.IsInvalidArgument(err), "%s: %v", sp.Source, err)
	}
	requireClean(t, dir, "")
}

// A source swapped for a FIFO after it was resolved is refused at once,
// never waited on.
func TestSourceSwappedForFIFO(t *testing.T) {
	ctx := context.Background()
	m, dir := newManager(t, DefaultPolicy())
	img := filepath.Join(t.TempDir(), "vol.img")
	require.NoError(t, os.WriteFile(img, make([]byte, 1<<20), 0o600))
	testHook = func(step string) {
		if step == "resolved" {
			require.NoError(t, os.Remove(img))
			require.NoError(t, unix.Mkfifo(img, 0o600))
		}
	}
	defer func() { testHook = nil }()
	for _, mode := range []Mode{ModeHostMount, ModeRawBlock} {
		_, err := m.Attach(ctx, "c1", Spec{Source: img, Destination: "/data", Mode: mode}, AttachOptions{UserNamespace: true, RootUID: 100000, RootGID: 100000})
		require.Truef(t, errdefs.IsInvalidArgument(err), "%s: %v", mode, err)
		require.NoError(t, os.Remove(img))
		require.NoError(t, os.WriteFile(img, make([]byte, 1<<20), 0o600))
	}
	requireClean(t, dir, img)
}

// A container's mount namespace can outlive the container: a thread of
// the runtime that set it up may still be in it (runc's mount-source
// thread, when Go ran it on the main thread, stays there for the life of
// the process). Its bind of the volume keeps the filesystem, hence the
// loop device; berth cannot reach it. Detach must not report success while
// the device is held: it waits for the holder within its context, and,
// when the context ends first, fails naming the holder, with everything of
// berth's undone, so that the kernel frees the device with its holder.
func TestDetachWhileAContainerNamespaceOutlivesTheContainer(t *testing.T) {
	setup := func(t *testing.T) (m *Manager, dir, img string, pid int, end func()) {
		m, dir = newManager(t, DefaultPolicy())
		img = makeImage(t, t.TempDir(), "ext4")
		att, err := m.Attach(context.Background(), "c1", Spec{Source: img, Destination: "/data"}, AttachOptions{})
		require.NoError(t, err)
		pid, end = holdNamespace(t, "container", att.Mount.Source, t.TempDir())
		return m, dir, img, pid, end
	}

	t.Run("context ends first", func(t *testing.T) {
		m, dir, img, pid, end := setup(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := m.Detach(ctx, "c1", "/data")
		require.ErrorIs(t, err, context.Canceled, "the device is held: Detach cannot have succeeded")
		require.Contains(t, err.Error(), fmt.Sprintf("pid %d ", pid), "the error names the holder")
		mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
		require.NoError(t, err)
		require.Empty(t, mounts, "berth's mount is gone")
		ents, err := os.ReadDir(filepath.Join(dir, "records"))
		require.NoError(t, err)
		require.Empty(t, ents, "and its record")
		require.NotEmpty(t, takeSnapshot(t, img).loops, "the holder keeps the device")

		end()
		requireClean(t, dir, img)
	})

	t.Run("holder goes", func(t *testing.T) {
		m, dir, img, _, end := setup(t)
		done := make(chan error, 1)
		go func() { done <- m.Detach(context.Background(), "c1", "/data") }()
		end()
		require.NoError(t, <-done)
		requireClean(t, dir, img)
	})
}

// An ext4 superblock cannot make the host kernel panic (errors=panic) nor
// open a journal on another device: the mount overrides the first, the
// probe refuses the second before any mount.
func TestExt4SuperblockCannotReachTheHost(t *testing.T) {
	ctx := context.Background()
	m, dir := newManager(t, DefaultPolicy())
	img := makeImage(t, t.TempDir(), "ext4")
	run(t, "tune2fs", "-e", "panic", img)
	att, err := m.Attach(ctx, "c1", Spec{Source: img, Destination: "/data"}, AttachOptions{})
	require.NoError(t, err)
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(att.Mount.Source))
	require.NoError(t, err)
	require.Len(t, ms, 1)
	require.Contains(t, ms[0].VFSOptions, "errors=remount-ro", "the superblock's errors=panic is overridden")
	require.NoError(t, m.Detach(ctx, "c1", "/data"))

	ext := makeImage(t, t.TempDir(), "ext4")
	run(t, "debugfs", "-w", "-R", "ssv journal_inum 0", ext)
	run(t, "debugfs", "-w", "-R", "ssv journal_dev 1792", ext)
	_, err = m.Attach(ctx, "c1", Spec{Source: ext, Destination: "/data"}, AttachOptions{})
	require.Truef(t, errdefs.IsInvalidArgument(err), "%v", err)
	require.ErrorIs(t, err, ErrGeometry)
	require.Contains(t, err.Error(), "external journal")
	requireClean(t, dir, ext)
}

// A block device attached read-only is still the same device to a
// read-write or raw attach: only read-only host mounts share it.
func TestReadOnlyBlockDeviceIsExclusive(t *testing.T) {
	ctx := context.Background()
	m, dir := newManager(t, DefaultPolicy())
	img := makeImage(t, t.TempDir(), "ext4")
	ld := hostLoop(t, img)
	user := AttachOptions{UserNamespace: true, RootUID: 100000, RootGID: 100000}
	_, err := m.Attach(ctx, "ro1", Spec{Source: ld.Path, Destination: "/data", ReadOnly: true}, AttachOptions{})
	require.NoError(t, err)
	_, err = m.Attach(ctx, "ro2", Spec{Source: ld.Path, Destination: "/data", ReadOnly: true}, AttachOptions{})
	require.NoError(t, err, "read-only host mounts share")
	_, err = m.Attach(ctx, "rw", Spec{Source: ld.Path, Destination: "/data"}, AttachOptions{})
	require.Truef(t, errdefs.IsFailedPrecondition(err), "read-write next to read-only: %v", err)
	_, err = m.Attach(ctx, "raw", Spec{Source: ld.Path, Destination: "/dev/vdb", Mode: ModeRawBlock}, user)
	require.Truef(t, errdefs.IsFailedPrecondition(err), "raw next to read-only: %v", err)
	require.NoError(t, m.DetachAll(ctx, "ro1"))
	require.NoError(t, m.DetachAll(ctx, "ro2"))
	_, err = m.Attach(ctx, "raw", Spec{Source: ld.Path, Destination: "/dev/vdb", Mode: ModeRawBlock}, user)
	require.NoError(t, err)
	_, err = m.Attach(ctx, "ro3", Spec{Source: ld.Path, Destination: "/data", ReadOnly: true}, AttachOptions{})
	require.Truef(t, errdefs.IsFailedPrecondition(err), "read-only next to raw: %v", err)
	require.NoError(t, m.DetachAll(ctx, "raw"))
	requireClean(t, dir, "")
}

// State roots do not share a block device or image either: a second
// manager (another root) is refused what the first holds, however it
// holds it (read-only host mounts share within one root).
func TestSourcesAreExclusiveAcrossRoots(t *testing.T) {
	ctx := context.Background()
	a, dirA := newManager(t, DefaultPolicy())
	b, dirB := newManager(t, DefaultPolicy())
	img := makeImage(t, t.TempDir(), "ext4")
	ld := hostLoop(t, img)
	user := AttachOptions{UserNamespace: true, RootUID: 100000, RootGID: 100000}
	for _, first := range []Spec{
		{Source: ld.Path, Destination: "/dev/vdb", Mode: ModeRawBlock},
		{Source: ld.Path, Destination: "/data"},
	} {
		_, err := a.Attach(ctx, "c1", first, user)
		require.NoError(t, err)
		for _, second := range []Spec{
			{Source: ld.Path, Destination: "/dev/vdb", Mode: ModeRawBlock},
			{Source: ld.Path, Destination: "/data"},
			{Source: ld.Path, Destination: "/data", ReadOnly: true},
		} {
			_, err := b.Attach(ctx, "c2", second, user)
			require.Truef(t, errdefs.IsFailedPrecondition(err), "%+v under another root while %+v holds it: %v", second, first, err)
		}
		require.NoError(t, a.DetachAll(ctx, "c1"))
	}
	_, err := a.Attach(ctx, "c1", Spec{Source: ld.Path, Destination: "/data", ReadOnly: true}, AttachOptions{})
	require.NoError(t, err)
	_, err = b.Attach(ctx, "c2", Spec{Source: ld.Path, Destination: "/data", ReadOnly: true}, AttachOptions{})
	require.True(t, errdefs.IsFailedPrecondition(err), "read-only host mounts share within a root only: %v", err)
	_, err = b.Attach(ctx, "c3", Spec{Source: ld.Path, Destination: "/data"}, AttachOptions{})
	require.True(t, errdefs.IsFailedPrecondition(err))
	require.NoError(t, a.DetachAll(ctx, "c1"))
	requireClean(t, dirA, "")
	requireClean(t, dirB, "")
}

// A source named through a link a tenant could have planted (in a share,
// a subPath) is refused, whatever it points to; a block device may be
// named by a link under /dev only (os-brick's /dev/disk/by-path), and must
// be one of the host's nodes, not one made with mknod elsewhere.
func TestSourcesNamedThroughLinks(t *testing.T) {
	ctx := context.Background()
	m, dir := newManager(t, DefaultPolicy())
	share := t.TempDir()
	hostDir := t.TempDir()
	img := makeImage(t, t.TempDir(), "ext4")
	require.NoError(t, os.Symlink(hostDir, filepath.Join(share, "sub")))
	require.NoError(t, os.Symlink(img, filepath.Join(share, "disk.img")))
	require.NoError(t, os.MkdirAll(filepath.Join(share, "real"), 0o755))
	require.NoError(t, os.Symlink(filepath.Join(share, "real"), filepath.Join(share, "via")))
	for _, sp := range []Spec{
		{Source: filepath.Join(share, "sub"), Destination: "/data"},
		{Source: filepath.Join(share, "disk.img"), Destination: "/data"},
		{Source: filepath.Join(share, "via"), Destination: "/data"},
		{Source: filepath.Join(share, "sub"), Destination: "/etc/x", Kind: KindFile},
	} {
		_, err := m.Attach(ctx, "c1", sp, AttachOptions{})
		require.Truef(t, errdefs.IsInvalidArgument(err), "%s: %v", sp.Source, err)
	}
	ld := hostLoop(t, img)
	var st unix.Stat_t
	require.NoError(t, unix.Stat(ld.Path, &st))
	node := filepath.Join(share, "node")
	require.NoError(t, unix.Mknod(node, unix.S_IFBLK|0o600, int(st.Rdev)))
	_, err := m.Attach(ctx, "c1", Spec{Source: node, Destination: "/data"}, AttachOptions{})
	require.Truef(t, errdefs.IsInvalidArgument(err), "a block node made outside /dev: %v", err)
	byPath := filepath.Join("/dev", "berth-test-"+filepath.Base(share))
	require.NoError(t, os.Symlink(ld.Path, byPath))
	defer os.Remove(byPath)
	_, err = m.Attach(ctx, "c1", Spec{Source: byPath, Destination: "/data"}, AttachOptions{})
	require.NoError(t, err, "a block device named by a link under /dev")
	require.NoError(t, m.DetachAll(ctx, "c1"))
	requireClean(t, dir, "")
}

// hostLoop attaches img to a loop device as the host would (os-brick's
// block device, say): bound, with nothing of this process holding it open.
// The test detaches it when it ends.
func hostLoop(t *testing.T, img string) loopDevice {
	t.Helper()
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	require.NoError(t, err)
	ld := loopDevice{Path: strings.TrimSpace(string(out))}
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", ld.Path).Run() })
	return ld
}

type loopDevice struct{ Path string }

// A source renamed over (in a directory the tenant writes) once it was
// opened changes nothing: identity, exclusivity and the attach are all
// the opened file's, so a file attached elsewhere cannot be slipped in.
func TestSourceRenamedOverAfterOpen(t *testing.T) {
	ctx := context.Background()
	m, dir := newManager(t, DefaultPolicy())
	share := t.TempDir()
	x, y := filepath.Join(share, "x.img"), filepath.Join(share, "y.img")
	require.NoError(t, os.WriteFile(x, append([]byte("X-DISK"), make([]byte, 1<<20)...), 0o600))
	require.NoError(t, os.WriteFile(y, append([]byte("Y-DISK"), make([]byte, 1<<20)...), 0o600))
	var xst unix.Stat_t
	require.NoError(t, unix.Stat(x, &xst))
	user := AttachOptions{UserNamespace: true, RootUID: 100000, RootGID: 100000}
	_, err := m.Attach(ctx, "holder", Spec{Source: y, Destination: "/dev/vdy", Mode: ModeRawBlock}, user)
	require.NoError(t, err)
	testHook = func(step string) {
		if step == "opened" {
			require.NoError(t, os.Rename(y, x)) // y's file now under x's name
		}
	}
	att, err := m.Attach(ctx, "c1", Spec{Source: x, Destination: "/dev/vdb", Mode: ModeRawBlock}, user)
	testHook = nil
	require.NoError(t, err)
	f, err := os.Open(att.Device.HostPath)
	require.NoError(t, err)
	b := make([]byte, 6)
	_, err = f.ReadAt(b, 0)
	f.Close()
	require.NoError(t, err)
	require.Equal(t, "X-DISK", string(b), "the attach is of the file that was opened")
	bound, err := loop.BackedBy(xst.Dev, xst.Ino)
	require.NoError(t, err)
	require.Len(t, bound, 1)
	require.NoError(t, m.DetachAll(ctx, "c1"))
	require.NoError(t, m.DetachAll(ctx, "holder"))
	requireClean(t, dir, "")
	bound, err = loop.BackedBy(xst.Dev, xst.Ino)
	require.NoError(t, err)
	require.Empty(t, bound, "the loop device of the renamed-away file is freed too")
}

// A block device the host has mounted is refused, the mount named.
func TestHostMountedBlockDeviceRefused(t *testing.T) {
	ctx := context.Background()
	m, dir := newManager(t, DefaultPolicy())
	img := makeImage(t, t.TempDir(), "ext4")
	ld := hostLoop(t, img)
	mnt := t.TempDir()
	run(t, "mount", "-o", "ro", ld.Path, mnt)
	defer func() { _ = unix.Unmount(mnt, 0) }()
	_, err := m.Attach(ctx, "c1", Spec{Source: ld.Path, Destination: "/data", ReadOnly: true}, AttachOptions{})
	require.Truef(t, errdefs.IsFailedPrecondition(err), "%v", err)
	require.Contains(t, err.Error(), "mounted at "+mnt)
	requireClean(t, dir, "")
}

// A retired volume whose source the host then made anew (another disk
// under the same device number: a new disk sequence) no longer pins it;
// the old one stays pinned while its container lives.
func TestRecreatedDeviceIsAnother(t *testing.T) {
	ctx := context.Background()
	m, dir := newManager(t, DefaultPolicy())
	user := AttachOptions{UserNamespace: true, RootUID: 100000, RootGID: 100000}
	a, b := makeImage(t, t.TempDir(), "ext4"), makeImage(t, t.TempDir(), "ext4")
	ld := hostLoop(t, a)
	_, err := m.Attach(ctx, "tenant", Spec{Source: ld.Path, Destination: "/dev/vdb", Mode: ModeRawBlock}, user)
	require.NoError(t, err)
	require.NoError(t, m.Retire(ctx, "tenant", "/dev/vdb"))
	_, err = m.Attach(ctx, "other", Spec{Source: ld.Path, Destination: "/dev/vdb", Mode: ModeRawBlock}, user)
	require.Truef(t, errdefs.IsFailedPrecondition(err), "the retired device went to another container: %v", err)
	if _, err := os.Stat("/sys/dev/block/7:0/diskseq"); err != nil {
		t.Skip("this kernel counts no disk sequences")
	}
	run(t, "losetup", "-d", ld.Path)
	run(t, "losetup", ld.Path, b) // another disk, the same number
	_, err = m.Attach(ctx, "other", Spec{Source: ld.Path, Destination: "/dev/vdb", Mode: ModeRawBlock}, user)
	require.NoError(t, err, "a device made anew is not the retired one")
	require.NoError(t, m.DetachAll(ctx, "other"))
	require.NoError(t, m.DetachAll(ctx, "tenant"))
	requireClean(t, dir, "")
}

// A retired volume is no unfinished attach: recovery never takes it out of
// its container again, whatever is attached at its destination since.
func TestRetiredIsNotUnfinished(t *testing.T) {
	ctx := context.Background()
	m, dir := newManager(t, DefaultPolicy())
	img := makeImage(t, t.TempDir(), "ext4")
	_, err := m.Attach(ctx, "c1", Spec{Source: img, Destination: "/data"}, AttachOptions{Pending: true})
	require.NoError(t, err)
	live := func(string) bool { return true }
	u, err := m.Unfinished(live)
	require.NoError(t, err)
	require.Len(t, u, 1, "a pending attach is unfinished")
	require.NoError(t, m.Retire(ctx, "c1", "/data"))
	u, err = m.Unfinished(live)
	require.NoError(t, err)
	require.Empty(t, u)
	require.NoError(t, m.DetachAll(ctx, "c1"))
	requireClean(t, dir, img)
}
