package image_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/image"
	. "github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/image/validate"
)

// fresh is where the store keeps the tree the import put together for
// image d, of the default kind.
func fresh(s *image.Store, d digest.Digest) string {
	return filepath.Join(s.Dir(), "rootfs", ".fresh-"+d.Encoded())
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// fromBlobs unpacks im as a store that keeps blobs only does: what the
// import's tree must be.
func fromBlobs(t *testing.T, im *Image, opts image.UnpackOptions) (string, image.UnpackResult) {
	t.Helper()
	s := openStore(t)
	res, err := s.ImportReader(ctx, bytes.NewReader(DockerSave(im)), image.ImportOptions{NoRootfs: true})
	require.NoError(t, err)
	require.False(t, exists(fresh(s, res.Images[0].Digest)))
	dir := filepath.Join(t.TempDir(), "want")
	ur, err := s.Unpack(ctx, res.Images[0].Digest.String(), dir, opts)
	require.NoError(t, err)
	return dir, *ur
}

// The import unpacks the layers as they stream in and puts the image's
// tree together; the first Unpack takes it, and it is the tree an unpack
// of the blobs gives.
func TestFreshTreeUnpack(t *testing.T) {
	im := busybox(t)
	want, wantRes := fromBlobs(t, im, image.UnpackOptions{})
	s := openStore(t)
	res, err := s.ImportReader(ctx, bytes.NewReader(DockerSave(im)), image.ImportOptions{Tags: image.TagPolicy{Expect: im.Tags}})
	require.NoError(t, err)
	d := res.Images[0].Digest
	require.True(t, exists(fresh(s, d)), "the import put the tree together")
	require.NoError(t, validate.Store(s.Dir()))

	dir := filepath.Join(t.TempDir(), "got")
	ur, err := s.Unpack(ctx, "busybox:1", dir, image.UnpackOptions{})
	require.NoError(t, err)
	assert.False(t, exists(fresh(s, d)), "Unpack took it")
	assert.Equal(t, validate.Snapshot(t, want), validate.Snapshot(t, dir))
	assert.Equal(t, wantRes.Stats, ur.Stats)
	require.NoError(t, validate.Store(s.Dir()))

	// Once taken, unpacks read the blobs again.
	again := filepath.Join(t.TempDir(), "again")
	_, err = s.Unpack(ctx, "busybox:1", again, image.UnpackOptions{})
	require.NoError(t, err)
	assert.Equal(t, validate.Snapshot(t, want), validate.Snapshot(t, again))
	tree, err := s.Rootfs(ctx, "busybox:1", image.RootfsOptions{})
	require.NoError(t, err)
	assert.Equal(t, validate.Snapshot(t, want), validate.Snapshot(t, tree))
	require.NoError(t, validate.Store(s.Dir()))
}

// Rootfs takes the import's tree too; an Unpack of another kind, or into
// an existing directory, does not.
func TestFreshTreeRootfs(t *testing.T) {
	im := busybox(t)
	want, _ := fromBlobs(t, im, image.UnpackOptions{})
	wantSetid, _ := fromBlobs(t, im, image.UnpackOptions{AllowSetid: true})
	s := openStore(t)
	res, err := s.ImportReader(ctx, bytes.NewReader(DockerSave(im)), image.ImportOptions{Tags: image.TagPolicy{Expect: im.Tags}})
	require.NoError(t, err)
	d := res.Images[0].Digest

	_, err = s.Unpack(ctx, "busybox:1", t.TempDir(), image.UnpackOptions{})
	assert.True(t, errdefs.IsAlreadyExists(err), "%v", err)
	setid := filepath.Join(t.TempDir(), "setid")
	_, err = s.Unpack(ctx, "busybox:1", setid, image.UnpackOptions{AllowSetid: true})
	require.NoError(t, err)
	assert.Equal(t, validate.Snapshot(t, wantSetid), validate.Snapshot(t, setid))
	require.True(t, exists(fresh(s, d)), "neither took the tree")

	tree, err := s.Rootfs(ctx, "busybox:1", image.RootfsOptions{Holder: "c1"})
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(s.Dir(), "rootfs", d.Encoded()), tree)
	assert.False(t, exists(fresh(s, d)), "Rootfs took it")
	assert.Equal(t, validate.Snapshot(t, want), validate.Snapshot(t, tree))
	require.NoError(t, validate.Store(s.Dir()))

	// A second import of the image puts no tree together: the image
	// has one.
	_, err = s.ImportReader(ctx, bytes.NewReader(DockerSave(im)), image.ImportOptions{})
	require.NoError(t, err)
	assert.False(t, exists(fresh(s, d)))
	require.NoError(t, validate.Store(s.Dir()))
}

// A store that keeps setuid bits puts its kind of tree together.
func TestFreshTreeSetidStore(t *testing.T) {
	im := setidImage()
	dir := filepath.Join(t.TempDir(), "store")
	setid, err := image.Open(dir, image.WithSetidRootfs())
	require.NoError(t, err)
	plain, err := image.Open(dir)
	require.NoError(t, err)
	res, err := setid.ImportReader(ctx, bytes.NewReader(DockerSave(im)), image.ImportOptions{Tags: image.TagPolicy{Expect: im.Tags}})
	require.NoError(t, err)
	d := res.Images[0].Digest
	kept := filepath.Join(dir, "rootfs-setid", ".fresh-"+d.Encoded())
	require.True(t, exists(kept))
	require.NoError(t, validate.Store(dir))

	tree, err := plain.Rootfs(ctx, "setid:1", image.RootfsOptions{})
	require.NoError(t, err)
	checkTree(t, tree, false)
	require.True(t, exists(kept), "not the plain store's kind")
	tree, err = setid.Rootfs(ctx, "setid:1", image.RootfsOptions{})
	require.NoError(t, err)
	checkTree(t, tree, true)
	assert.False(t, exists(kept))
	require.NoError(t, validate.Store(dir))
}

// The tree was unpacked from the verified bytes when they were imported:
// a blob that rots later does not reach it, and the unpacks after it
// find the rot as before.
func TestFreshTreeRot(t *testing.T) {
	s := openStore(t)
	im := NewImage([][]byte{Tar(File("a", strings.Repeat("a", 4096)))})
	im.Tags = []string{"rot:1"}
	_, err := s.ImportReader(ctx, bytes.NewReader(DockerSave(im)), image.ImportOptions{Tags: image.TagPolicy{Expect: im.Tags}})
	require.NoError(t, err)
	blob := filepath.Join(s.Dir(), "blobs/sha256", digest.FromBytes(im.Layers[0]).Encoded())
	require.NoError(t, os.Chmod(blob, 0o644))
	require.NoError(t, os.WriteFile(blob, bytes.Replace(im.Layers[0], []byte("aaaa"), []byte("aaab"), 1), 0o644))
	dir := filepath.Join(t.TempDir(), "r")
	_, err = s.Unpack(ctx, "rot:1", dir, image.UnpackOptions{})
	require.NoError(t, err)
	b, err := os.ReadFile(filepath.Join(dir, "a"))
	require.NoError(t, err)
	assert.Equal(t, strings.Repeat("a", 4096), string(b))
	_, err = s.Unpack(ctx, "rot:1", filepath.Join(t.TempDir(), "r2"), image.UnpackOptions{})
	assert.True(t, errdefs.IsDataLoss(err), "%v", err)
}

// Removing the image removes its tree; so does Open, for a tree whose
// image never made it into store.json (a commit killed in between).
func TestFreshTreeCollected(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := image.Open(dir)
	require.NoError(t, err)
	prior := NewImage([][]byte{Tar(File("p", "p"))})
	_, err = s.ImportReader(ctx, bytes.NewReader(DockerSave(prior)), image.ImportOptions{NoRootfs: true})
	require.NoError(t, err)
	before := validate.Snapshot(t, dir)

	im := NewImage([][]byte{Tar(File("a", "a")), Tar(File("b", "b"))})
	res, err := s.ImportReader(ctx, bytes.NewReader(DockerSave(im)), image.ImportOptions{})
	require.NoError(t, err)
	d := res.Images[0].Digest
	require.True(t, exists(fresh(s, d)))
	_, err = s.Remove(ctx, d.String())
	require.NoError(t, err)
	assert.False(t, exists(fresh(s, d)))
	require.NoError(t, validate.Store(dir))

	orphan := filepath.Join(dir, "rootfs", ".fresh-"+strings.Repeat("ab", 32))
	require.NoError(t, os.MkdirAll(filepath.Join(orphan, "tree", "etc"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(orphan, "stats.json"), []byte("{}"), 0o600))
	require.Error(t, validate.Store(dir), "an import's tree of no image")
	_, err = image.Open(dir)
	require.NoError(t, err)
	assert.False(t, exists(orphan))
	assert.NoFileExists(t, filepath.Join(dir, "rootfs", strings.Repeat("ab", 32)+".lock"), "collecting it made no lock file")
	require.NoError(t, validate.Store(dir))
	for _, l := range strings.Split(validate.Snapshot(t, dir), "\n") {
		// Trash and lock files aside, the store is as it was.
		assert.Contains(t, before, l)
	}
}

// A layer whose digest is found wrong only at its end, after its files
// were unpacked: the import is refused, and what was unpacked goes with
// the rest.
func TestRefusedAfterUnpacking(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := image.Open(dir)
	require.NoError(t, err)
	before := validate.Snapshot(t, dir)

	var es []Entry
	for i := range 400 {
		es = append(es, File(fmt.Sprintf("d%d/f%03d", i%4, i), strings.Repeat(string(rune('a'+i%26)), 10000)))
	}
	es = append(es, File("last", "the end"))
	im := NewImage([][]byte{Tar(es...)})
	entries := OCIEntries(im)
	layerName := "blobs/sha256/" + digest.FromBytes(im.Layers[0]).Encoded()
	found := false
	for i, e := range entries {
		if e.Name == layerName {
			// The same layer but for its last file: a digest that no
			// longer matches the blob's name, seen at its end.
			entries[i].Body = strings.Replace(e.Body, "the end", "THE END", 1)
			found = true
		}
	}
	require.True(t, found)
	arch := Tar(entries...)
	mid := bytes.Index(arch, []byte(strings.Repeat("a", 10000))) + 3<<20

	r, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := s.ImportReader(ctx, r, image.ImportOptions{})
		done <- err
	}()
	_, err = w.Write(arch[:mid])
	require.NoError(t, err)
	unpacked := func() int {
		n := 0
		xs, _ := filepath.Glob(filepath.Join(dir, "ingest", "*", "x*", "d*"))
		for _, x := range xs {
			files, _ := os.ReadDir(x)
			n += len(files)
		}
		return n
	}
	for deadline := time.Now().Add(time.Minute); unpacked() < 100 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
	}
	require.GreaterOrEqual(t, unpacked(), 100, "the layer's files were unpacked as it streamed in")
	go func() {
		_, err := w.Write(arch[mid:])
		w.CloseWithError(err)
	}()
	err = <-done
	r.Close()
	require.Error(t, err)
	assert.True(t, errdefs.IsInvalidArgument(err), "%v", err)
	assert.Contains(t, err.Error(), "does not match")
	assert.Equal(t, before, validate.Snapshot(t, dir), "nothing left, nothing changed")
	require.NoError(t, validate.Store(dir))
}

// Rootfs and Unpack racing for the import's tree: one takes it, the
// others unpack the blobs, and every tree is the same.
func TestFreshTreeRace(t *testing.T) {
	im := busybox(t)
	want, _ := fromBlobs(t, im, image.UnpackOptions{})
	s := openStore(t)
	res, err := s.ImportReader(ctx, bytes.NewReader(DockerSave(im)), image.ImportOptions{Tags: image.TagPolicy{Expect: im.Tags}})
	require.NoError(t, err)
	d := res.Images[0].Digest
	require.True(t, exists(fresh(s, d)))
	work := t.TempDir()
	trees := make([]string, 6)
	errs := make([]error, len(trees))
	var wg sync.WaitGroup
	for i := range trees {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				trees[i], errs[i] = s.Rootfs(ctx, "busybox:1", image.RootfsOptions{Holder: fmt.Sprintf("h%d", i)})
				return
			}
			trees[i] = filepath.Join(work, fmt.Sprint(i))
			_, errs[i] = s.Unpack(ctx, "busybox:1", trees[i], image.UnpackOptions{})
		}()
	}
	wg.Wait()
	for i, tree := range trees {
		require.NoError(t, errs[i])
		assert.Equal(t, validate.Snapshot(t, want), validate.Snapshot(t, tree), "tree %d", i)
	}
	assert.False(t, exists(fresh(s, d)))
	require.NoError(t, validate.Store(s.Dir()))
}
