package layer_test

import (
	"archive/tar"
	"bytes"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	. "github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/image/layer"
)

func TestAnalyzeCompressions(t *testing.T) {
	plain := Tar(File("a", "hello"), Dir("d/"), Symlink("d/l", "../a"))
	diff := digest.FromBytes(plain)
	for _, c := range []struct {
		blob []byte
		comp layer.Compression
	}{{plain, layer.None}, {Gzip(plain), layer.Gzip}, {Zstd(plain), layer.Zstd}} {
		info, err := layer.Analyze(bytes.NewReader(c.blob), digest.SHA256, layer.Limits{})
		require.NoError(t, err)
		require.NoError(t, info.NotLayer)
		assert.Equal(t, c.comp, info.Compression)
		assert.Equal(t, digest.FromBytes(c.blob), info.Digest)
		assert.Equal(t, int64(len(c.blob)), info.Size)
		assert.Equal(t, diff, info.DiffID)
		assert.Equal(t, int64(len(plain)), info.UncompressedSize)
		assert.Equal(t, 3, info.Entries)
	}
}

func TestAnalyzeNotLayers(t *testing.T) {
	for name, b := range map[string][]byte{
		"json":             []byte(`{"config": true}`),
		"garbage gzip":     append([]byte{0x1f, 0x8b}, bytes.Repeat([]byte{7}, 100)...),
		"bzip2":            []byte("BZh91AY&SY"),
		"dotdot":           Tar(File("../x", "")),
		"symlink planted":  Tar(Symlink("s", "/etc"), File("s/passwd", "")),
		"hardlink through": Tar(Symlink("s", "/etc"), Hardlink("h", "s/passwd")),
		"bad whiteout":     Tar(File("a/.wh..", "")),
		"sparse":           Tar(Entry{Name: "x", Type: tar.TypeGNUSparse}),
	} {
		info, err := layer.Analyze(bytes.NewReader(b), digest.SHA256, layer.Limits{})
		require.NoError(t, err, name)
		assert.True(t, errdefs.IsInvalidArgument(info.NotLayer), "%s: %v", name, info.NotLayer)
		assert.Equal(t, digest.FromBytes(b), info.Digest, "%s: the whole blob is hashed anyway", name)
	}
	// A symlink replaced by a directory no longer counts.
	info, err := layer.Analyze(bytes.NewReader(Tar(Symlink("s", "/etc"), Dir("s/"), File("s/x", ""))), digest.SHA256, layer.Limits{})
	require.NoError(t, err)
	assert.NoError(t, info.NotLayer)
}

func TestAnalyzeLimits(t *testing.T) {
	zeros := Tar(Entry{Name: "z", Body: string(make([]byte, 8<<20))})
	for name, c := range map[string]struct {
		blob []byte
		l    layer.Limits
	}{
		"ratio":   {Gzip(zeros), layer.Limits{MaxRatio: 100}},
		"size":    {zeros, layer.Limits{MaxSize: 1 << 20}},
		"entries": {Tar(File("a", ""), File("b", "")), layer.Limits{MaxEntries: 1}},
		"length":  {Tar(File(strings.Repeat("x", 100), "")), layer.Limits{MaxPathLength: 99}},
		"depth":   {Tar(File("a/b/c/d", "")), layer.Limits{MaxPathDepth: 3}},
	} {
		_, err := layer.Analyze(bytes.NewReader(c.blob), digest.SHA256, c.l)
		assert.True(t, errdefs.IsResourceExhausted(err), "%s: %v", name, err)
	}
	// Below the grace, tiny layers may compress very well.
	_, err := layer.Analyze(bytes.NewReader(Gzip(Tar(Entry{Name: "z", Body: string(make([]byte, 512<<10))}))), digest.SHA256, layer.Limits{MaxRatio: 2})
	assert.NoError(t, err)
}

func TestCleanName(t *testing.T) {
	for in, want := range map[string]string{"/": ".", "./": ".", "a/./b/": "a/b", "//etc/passwd": "etc/passwd", "a//b": "a/b"} {
		got, err := layer.CleanName(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "..", "../a", "a/../../b", "a/..", "a\x00b"} {
		_, err := layer.CleanName(in)
		assert.True(t, errdefs.IsInvalidArgument(err), "%q: %v", in, err)
	}
}

// FuzzAnalyze feeds arbitrary bytes to Analyze: it must never fail for
// anything but a limit, always hash the whole input, and accept as a layer
// only what is safe to unpack.
func FuzzAnalyze(f *testing.F) {
	f.Add(Tar(File("a", "x"), Symlink("s", "/"), Dir("d/"), Hardlink("h", "a")))
	f.Add(Gzip(Tar(File("../x", ""))))
	f.Add(Zstd(Tar(Symlink("s", "/etc"), File("s/x", ""))))
	f.Add([]byte(`{"not":"a layer"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		l := layer.Limits{MaxEntries: 1000, MaxPathLength: 256, MaxPathDepth: 32, MaxSize: 64 << 20, MaxRatio: 100}
		info, err := layer.Analyze(bytes.NewReader(b), digest.SHA256, l)
		if err != nil {
			if !errdefs.IsResourceExhausted(err) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if info.Digest != digest.FromBytes(b) || info.Size != int64(len(b)) {
			t.Fatalf("digest %s size %d for %d bytes", info.Digest, info.Size, len(b))
		}
		if info.NotLayer != nil {
			if !errdefs.IsInvalidArgument(info.NotLayer) {
				t.Fatalf("NotLayer of class other than invalid-argument: %v", info.NotLayer)
			}
			return
		}
		if info.DiffID == "" {
			t.Fatal("a layer without a diff ID")
		}
	})
}
