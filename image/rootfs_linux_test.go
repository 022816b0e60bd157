package image_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/image"
	. "github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/image/validate"
	"github.com/berthrun/berth/internal/fixture"
)

// netBindCap is a security.capability attribute (revision 2, effective)
// granting CAP_NET_BIND_SERVICE.
const netBindCap = "\x01\x00\x00\x02" + "\x00\x04\x00\x00" + "\x00\x00\x00\x00" + "\x00\x00\x00\x00\x00\x00\x00\x00"

// setidImage is an image whose privileges a default tree must not keep: a
// setuid root program (and a hardlink to it), a setgid program, a program
// with a file capability.
func setidImage() *Image {
	im := NewImage([][]byte{Tar(
		Dir("bin/"),
		Entry{Name: "bin/su", Body: "su", Mode: 0o4755},
		Hardlink("bin/su-link", "bin/su"),
		Entry{Name: "bin/wall", Body: "wall", Mode: 0o2755, GID: 5},
		Entry{Name: "bin/ping", Body: "ping", Mode: 0o755, Xattrs: map[string]string{"security.capability": netBindCap}},
		File("etc/plain", "plain\n"),
	)}, "/bin/su")
	im.Tags = []string{"setid:1"}
	return im
}

// setidStores imports setidImage into a store in a new directory and
// returns two views of it: one opened with the defaults, one
// WithSetidRootfs (as two processes would open it).
func setidStores(t *testing.T) (dir string, plain, setid *image.Store) {
	t.Helper()
	fixture.RequireRoot(t) // file capabilities and owners need it
	dir = filepath.Join(t.TempDir(), "store")
	plain, err := image.Open(dir)
	require.NoError(t, err)
	setid, err = image.Open(dir, image.WithSetidRootfs())
	require.NoError(t, err)
	im := setidImage()
	// Trees unpacked from the blobs, both kinds (TestFreshTreeSetidStore
	// has the import's).
	_, err = plain.ImportReader(ctx, bytes.NewReader(DockerSave(im)), image.ImportOptions{Tags: image.TagPolicy{Expect: im.Tags}, NoRootfs: true})
	require.NoError(t, err)
	return dir, plain, setid
}

// checkTree checks that tree is setidImage unpacked with setuid/setgid
// bits and capabilities kept (setid) or cleared.
func checkTree(t *testing.T, tree string, setid bool) {
	t.Helper()
	require.NoError(t, validate.Tree(tree, validate.TreeOptions{AllowSetid: setid}), "tree %s", tree)
	mode := func(name string) os.FileMode {
		fi, err := os.Stat(filepath.Join(tree, name))
		require.NoError(t, err)
		return fi.Mode()
	}
	capability := func(name string) string {
		buf := make([]byte, 64)
		n, err := unix.Lgetxattr(filepath.Join(tree, name), "security.capability", buf)
		if err == unix.ENODATA {
			return ""
		}
		require.NoError(t, err)
		return string(buf[:n])
	}
	b, err := os.ReadFile(filepath.Join(tree, "etc/plain"))
	require.NoError(t, err)
	assert.Equal(t, "plain\n", string(b))
	if setid {
		assert.Equal(t, os.ModeSetuid|0o755, mode("bin/su")&(os.ModePerm|os.ModeSetuid|os.ModeSetgid), "tree %s", tree)
		assert.Equal(t, os.ModeSetuid|0o755, mode("bin/su-link")&(os.ModePerm|os.ModeSetuid|os.ModeSetgid))
		assert.Equal(t, os.ModeSetgid|0o755, mode("bin/wall")&(os.ModePerm|os.ModeSetuid|os.ModeSetgid))
		assert.Equal(t, netBindCap, capability("bin/ping"))
		return
	}
	for _, f := range []string{"bin/su", "bin/su-link", "bin/wall", "bin/ping"} {
		assert.Equal(t, os.FileMode(0o755), mode(f)&(os.ModePerm|os.ModeSetuid|os.ModeSetgid), "%s in tree %s", f, tree)
		assert.Empty(t, capability(f), "%s in tree %s", f, tree)
	}
}

// A store with the defaults and one WithSetidRootfs, on one directory,
// each get the tree of their own kind, whichever unpacks first: the
// trees are keyed by their unpack options.
func TestRootfsSetidKeyedApart(t *testing.T) {
	for _, setidFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("setid-first=%v", setidFirst), func(t *testing.T) {
			dir, plain, setid := setidStores(t)
			first, second := plain, setid
			if setidFirst {
				first, second = setid, plain
			}
			a, err := first.Rootfs(ctx, "setid:1", image.RootfsOptions{})
			require.NoError(t, err)
			b, err := second.Rootfs(ctx, "setid:1", image.RootfsOptions{})
			require.NoError(t, err)
			require.NotEqual(t, a, b, "one tree per kind")
			plainTree, setidTree := a, b
			if setidFirst {
				plainTree, setidTree = b, a
			}
			checkTree(t, plainTree, false)
			checkTree(t, setidTree, true)

			// Asked again, and by stores opened afresh (another
			// process's), each kind gets its own tree.
			p, err := image.Open(dir)
			require.NoError(t, err)
			s, err := image.Open(dir, image.WithSetidRootfs())
			require.NoError(t, err)
			for _, c := range []struct {
				s            *image.Store
				holder, want string
			}{{plain, "hp", plainTree}, {p, "hp", plainTree}, {setid, "hs", setidTree}, {s, "hs", setidTree}} {
				got, err := c.s.Rootfs(ctx, "setid:1", image.RootfsOptions{Holder: c.holder})
				require.NoError(t, err)
				assert.Equal(t, c.want, got)
			}
			// A holder holds one tree: not the other kind's too.
			_, err = s.Rootfs(ctx, "setid:1", image.RootfsOptions{Holder: "hp"})
			assert.True(t, errdefs.IsFailedPrecondition(err), "%v", err)
			_, err = p.Rootfs(ctx, "setid:1", image.RootfsOptions{Holder: "hs"})
			assert.True(t, errdefs.IsFailedPrecondition(err), "%v", err)
			checkTree(t, plainTree, false)
			checkTree(t, setidTree, true)
			require.NoError(t, validate.Store(dir))
		})
	}
}

// Concurrent unpacks of both kinds, from goroutines and from other
// processes, never cross: every caller gets its kind's one tree.
func TestRootfsSetidConcurrent(t *testing.T) {
	dir, plain, setid := setidStores(t)
	type result struct {
		setid bool
		tree  string
		err   error
	}
	results := make(chan result, 16)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := helper(t, "BERTH_STORE="+dir, "BERTH_ROOTFS=setid:1", fmt.Sprintf("BERTH_HOLDER=proc%d", i))
			if i%2 == 1 {
				cmd.Env = append(cmd.Env, "BERTH_SETID=1")
			}
			out, err := cmd.Output()
			results <- result{i%2 == 1, strings.TrimSpace(string(out)), err}
		}()
	}
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := []*image.Store{plain, setid}[i%2]
			tree, err := s.Rootfs(ctx, "setid:1", image.RootfsOptions{Holder: fmt.Sprintf("g%d", i)})
			results <- result{i%2 == 1, tree, err}
		}()
	}
	wg.Wait()
	close(results)
	trees := map[bool]map[string]bool{false: {}, true: {}}
	for r := range results {
		require.NoError(t, r.err)
		trees[r.setid][r.tree] = true
	}
	require.Len(t, trees[false], 1)
	require.Len(t, trees[true], 1)
	for setid, ts := range trees {
		for tree := range ts {
			checkTree(t, tree, setid)
		}
	}
	require.NoError(t, validate.Store(dir))
}

// Removing the image removes both kinds of tree once no holder holds
// them; a holder is released whatever kind the releasing store makes.
func TestRootfsSetidRemoveAndRelease(t *testing.T) {
	dir, plain, setid := setidStores(t)
	bytes0, inodes0, err := plain.Usage(ctx)
	require.NoError(t, err)
	plainTree, err := plain.Rootfs(ctx, "setid:1", image.RootfsOptions{Holder: "p"})
	require.NoError(t, err)
	setidTree, err := setid.Rootfs(ctx, "setid:1", image.RootfsOptions{Holder: "s"})
	require.NoError(t, err)
	bytes1, inodes1, err := plain.Usage(ctx)
	require.NoError(t, err)
	assert.Greater(t, bytes1, bytes0)
	assert.GreaterOrEqual(t, inodes1, inodes0+2*6, "both trees are counted")

	// A holder's name cannot pose as another kind's hold.
	_, err = setid.Rootfs(ctx, "setid:1", image.RootfsOptions{Holder: "p/setid"})
	assert.True(t, errdefs.IsInvalidArgument(err), "%v", err)
	require.NoError(t, plain.ReleaseRootfs(ctx, "s/setid"), "not a holder's name: nothing to release")
	require.NoError(t, plain.ReleaseRootfs(ctx, "p/"))

	_, err = plain.Remove(ctx, "setid:1")
	require.NoError(t, err)
	for _, tree := range []string{plainTree, setidTree} {
		_, err = os.Stat(tree)
		require.NoError(t, err, "held: kept though the image is gone")
	}
	checkTree(t, plainTree, false)
	checkTree(t, setidTree, true)
	require.NoError(t, validate.Store(dir))

	require.NoError(t, plain.ReleaseRootfs(ctx, "s"))
	_, err = os.Stat(setidTree)
	assert.True(t, os.IsNotExist(err), "the setid tree's holder is gone: %v", err)
	_, err = os.Stat(plainTree)
	require.NoError(t, err, "the default tree is still held")
	require.NoError(t, setid.ReleaseRootfs(ctx, "p"))
	_, err = os.Stat(plainTree)
	assert.True(t, os.IsNotExist(err), "the default tree's holder is gone: %v", err)
	require.NoError(t, validate.Store(dir))

	// Without holders, both kinds live as long as the image.
	im := setidImage()
	_, err = setid.ImportReader(ctx, bytes.NewReader(DockerSave(im)), image.ImportOptions{Tags: image.TagPolicy{Expect: im.Tags}})
	require.NoError(t, err)
	plainTree, err = plain.Rootfs(ctx, "setid:1", image.RootfsOptions{})
	require.NoError(t, err)
	setidTree, err = setid.Rootfs(ctx, "setid:1", image.RootfsOptions{})
	require.NoError(t, err)
	_, err = setid.Remove(ctx, "setid:1")
	require.NoError(t, err)
	for _, tree := range []string{plainTree, setidTree} {
		_, err = os.Stat(tree)
		assert.True(t, os.IsNotExist(err), "%s: %v", tree, err)
	}
	require.NoError(t, validate.Store(dir))
	bytes2, inodes2, err := plain.Usage(ctx)
	require.NoError(t, err)
	assert.Less(t, bytes2, bytes1)
	assert.Less(t, inodes2, inodes1)
}

// An unpack of either kind killed half-way is removed by the next Open,
// whatever kind of store opens: the store is as it was.
func TestKilledRootfsUnpack(t *testing.T) {
	fixture.RequireRoot(t)
	var entries []Entry
	for i := range 20000 {
		entries = append(entries, Entry{Name: fmt.Sprintf("f%05d", i), Body: "x", Mode: 0o4755})
	}
	big := NewImage([][]byte{Tar(entries...)})
	big.Tags = []string{"big:1"}
	for _, setidKind := range []bool{false, true} {
		t.Run(fmt.Sprintf("setid=%v", setidKind), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "store")
			s, err := image.Open(dir)
			require.NoError(t, err)
			_, err = s.ImportReader(ctx, bytes.NewReader(DockerSave(big)), image.ImportOptions{Tags: image.TagPolicy{Expect: big.Tags}, NoRootfs: true})
			require.NoError(t, err)
			before := validate.Snapshot(t, dir)

			kindDir := filepath.Join(dir, "rootfs")
			cmd := helper(t, "BERTH_STORE="+dir, "BERTH_ROOTFS=big:1")
			if setidKind {
				kindDir = filepath.Join(dir, "rootfs-setid")
				cmd.Env = append(cmd.Env, "BERTH_SETID=1")
			}
			require.NoError(t, cmd.Start())
			tmp := ""
			for deadline := time.Now().Add(30 * time.Second); tmp == "" && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				ents, _ := os.ReadDir(kindDir)
				for _, e := range ents {
					if strings.HasPrefix(e.Name(), ".tmp-") {
						if files, _ := os.ReadDir(filepath.Join(kindDir, e.Name())); len(files) > 10 {
							tmp = filepath.Join(kindDir, e.Name())
						}
					}
				}
			}
			require.NotEmpty(t, tmp, "the unpack never started")
			// An Open meanwhile leaves the live unpack alone.
			_, err = image.Open(dir, image.WithSetidRootfs())
			require.NoError(t, err)
			_, err = os.Stat(tmp)
			require.NoError(t, err, "the unpack in progress is kept")

			require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
			err = cmd.Wait()
			require.Error(t, err, "killed before it finished (make the image bigger if not)")
			assert.NotEqual(t, before, validate.Snapshot(t, dir), "the killed unpack left its tree behind")

			// The other kind of store cleans it up.
			var opts []image.Option
			if !setidKind {
				opts = append(opts, image.WithSetidRootfs())
			}
			_, err = image.Open(dir, opts...)
			require.NoError(t, err)
			assert.Equal(t, before, validate.Snapshot(t, dir), "Open cleaned up: the store is as it was")
			require.NoError(t, validate.Store(dir))
		})
	}
}
