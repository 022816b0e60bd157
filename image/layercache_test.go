package image_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/image"
	. "github.com/berthrun/berth/image/imagetest"
)

// pullImage pulls im from memory, tagged name.
func pullImage(s *image.Store, im *Image, name string, lim image.Limits) error {
	man := im.Manifest()
	r := mapRemote{im.ConfigDigest(): im.Config, digest.FromBytes(man): man}
	for _, l := range im.Layers {
		r[digest.FromBytes(l)] = l
	}
	_, err := s.Pull(ctx, r, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(man), Size: int64(len(man))},
		image.ImportOptions{Tags: image.TagPolicy{Name: name}, Limits: lim})
	return err
}

// sharedLayerImages are two images with a layer in common (deep paths,
// 64 KiB of content, gzip), the second with a layer of its own.
func sharedLayerImages() (first, second *Image, shared []byte) {
	shared = Gzip(Tar(Dir("a"), Dir("a/b"), Dir("a/b/c"), File("a/b/c/f", strings.Repeat("x", 64<<10))))
	return NewImage([][]byte{shared}, "/one"), NewImage([][]byte{shared, Gzip(Tar(File("g", "g")))}, "/two"), shared
}

// corrupt flips a byte in the middle of the store's blob of layer l, in
// place (same file, same size), and sets its modification time to mtime.
func corrupt(t *testing.T, s *image.Store, l []byte, mtime time.Time) {
	t.Helper()
	p := filepath.Join(s.Dir(), "blobs", "sha256", digest.FromBytes(l).Encoded())
	require.NoError(t, os.Chmod(p, 0o644))
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte{l[len(l)/2] ^ 0xff}, int64(len(l)/2))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, os.Chtimes(p, mtime, mtime))
}

// A pull of an image whose layer the store holds takes what the store
// learnt of that very file when it placed it, without decompressing it
// again; any read of its content still checks it (data-loss).
func TestPullKnownLayerNotReadAgain(t *testing.T) {
	s := openStore(t)
	first, second, shared := sharedLayerImages()
	require.NoError(t, pullImage(s, first, "first:1", image.Limits{}))
	p := filepath.Join(s.Dir(), "blobs", "sha256", digest.FromBytes(shared).Encoded())
	fi, err := os.Stat(p)
	require.NoError(t, err)
	corrupt(t, s, shared, fi.ModTime()) // a bit rotted: nothing about the file says so

	require.NoError(t, pullImage(s, second, "second:1", image.Limits{}))
	dir := filepath.Join(t.TempDir(), "r")
	_, err = s.Unpack(ctx, "second:1", dir, image.UnpackOptions{})
	assert.True(t, errdefs.IsDataLoss(err), "%v", err)
	_, serr := os.Stat(dir)
	assert.True(t, os.IsNotExist(serr))

	// A store opened anew knows nothing yet: it reads the blob and
	// finds the rot.
	s2, err := image.Open(s.Dir())
	require.NoError(t, err)
	err = pullImage(s2, NewImage([][]byte{shared}, "/three"), "third:1", image.Limits{})
	assert.True(t, errdefs.IsDataLoss(err), "%v", err)
	_, err = s2.Get(ctx, "third:1")
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
}

// A blob of the store changed since it was analyzed (its modification
// time moved) is read again, and its rot refuses the pull, which leaves
// the store as it was.
func TestPullKnownLayerChanged(t *testing.T) {
	s := openStore(t)
	first, second, shared := sharedLayerImages()
	require.NoError(t, pullImage(s, first, "first:1", image.Limits{}))
	corrupt(t, s, shared, time.Unix(1_000_000_000, 0))

	err := pullImage(s, second, "second:1", image.Limits{})
	assert.True(t, errdefs.IsDataLoss(err), "%v", err)
	_, err = s.Get(ctx, "second:1")
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
	imgs, err := s.List(ctx)
	require.NoError(t, err)
	assert.Len(t, imgs, 1)
}

// What the store knows of a layer it holds never lets a pull past limits
// that the layer exceeds: the pull is refused as a store that never saw
// the layer refuses it.
func TestPullKnownLayerLimits(t *testing.T) {
	for name, lim := range map[string]image.Limits{
		"uncompressed": {MaxUncompressedBytes: 32 << 10},
		"path depth":   {MaxPathDepth: 2},
		"entries":      {MaxLayerEntries: 2},
	} {
		t.Run(name, func(t *testing.T) {
			first, second, _ := sharedLayerImages()
			want := pullImage(openStore(t), second, "second:1", lim)
			require.Error(t, want, "the limit must refuse the layer")

			s := openStore(t)
			require.NoError(t, pullImage(s, first, "first:1", image.Limits{}))
			err := pullImage(s, second, "second:1", lim)
			require.Error(t, err)
			assert.Equal(t, errdefs.IsResourceExhausted(want), errdefs.IsResourceExhausted(err), "%v; a fresh store: %v", err, want)
			assert.Equal(t, errdefs.IsInvalidArgument(want), errdefs.IsInvalidArgument(err), "%v; a fresh store: %v", err, want)
			_, err = s.Get(ctx, "second:1")
			assert.True(t, errdefs.IsNotFound(err), "%v", err)
		})
	}
}

// What a store remembers of an image's documents never outlives the
// image: removed through another Store on the same directory (another
// process), it is not found, and a new image over the same blobs is
// read as stored.
func TestGetRemovedElsewhere(t *testing.T) {
	s := openStore(t)
	first, _, _ := sharedLayerImages()
	require.NoError(t, pullImage(s, first, "first:1", image.Limits{}))
	im, err := s.Get(ctx, "first:1")
	require.NoError(t, err)
	list, err := s.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)

	other, err := image.Open(s.Dir())
	require.NoError(t, err)
	_, err = other.Remove(ctx, "first:1")
	require.NoError(t, err)
	_, err = s.Get(ctx, "first:1")
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
	_, err = s.Get(ctx, im.Digest.String())
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
	list, err = s.List(ctx)
	require.NoError(t, err)
	assert.Empty(t, list)

	require.NoError(t, pullImage(other, first, "again:1", image.Limits{}))
	again, err := s.Get(ctx, "again:1")
	require.NoError(t, err)
	assert.Equal(t, im.Digest, again.Digest)
	assert.Equal(t, []string{"again:1"}, again.Tags)
}
