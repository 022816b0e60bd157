package unpack_test

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	. "github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/image/unpack"
	"github.com/berthrun/berth/image/validate"
	"github.com/berthrun/berth/internal/fixture"
)

// apply unpacks layers into a new directory and returns it.
func apply(t *testing.T, opts unpack.Options, layers ...[]byte) (string, unpack.Stats, error) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "root")
	require.NoError(t, os.Mkdir(dir, 0o755))
	u, err := unpack.New(dir, opts)
	require.NoError(t, err)
	for _, l := range layers {
		if err := u.Apply(context.Background(), bytes.NewReader(l)); err != nil {
			u.Close()
			return dir, u.Stats(), err
		}
	}
	return dir, u.Stats(), u.Close()
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return string(b)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func TestWhiteouts(t *testing.T) {
	lower := Tar(Dir("d/"), File("d/a", "a"), File("d/b", "b"), Dir("d/sub/"), File("d/sub/c", "c"), File("gone", "x"), Dir("o/"), File("o/old", "old"))
	upper := Tar(
		File(".wh.gone", ""),
		File("d/.wh.a", ""),
		File("d/.wh.sub", ""),
		// Recreated in the same layer before its whiteout: the whiteout
		// hides only the layers below.
		File("d/b", "new b"), File("d/.wh.b", ""),
		Dir("o/"), File("o/new", "new"), File("o/.wh..wh..opq", ""),
		File(".wh..wh.plnk", ""), // aufs bookkeeping: ignored
	)
	dir, st, err := apply(t, unpack.Options{}, lower, upper)
	require.NoError(t, err)
	assert.False(t, exists(filepath.Join(dir, "gone")))
	assert.False(t, exists(filepath.Join(dir, "d/a")))
	assert.False(t, exists(filepath.Join(dir, "d/sub")), "a whiteout removes a whole directory")
	assert.Equal(t, "new b", read(t, filepath.Join(dir, "d/b")))
	assert.False(t, exists(filepath.Join(dir, "o/old")), "opaque directory hides the lower content")
	assert.Equal(t, "new", read(t, filepath.Join(dir, "o/new")), "but keeps its own layer's")
	assert.False(t, exists(filepath.Join(dir, ".wh..wh.plnk")))
	assert.False(t, exists(filepath.Join(dir, "d/.wh.b")), "whiteouts are not files")
	assert.Equal(t, 17, st.Entries)
}

func TestReplaceKinds(t *testing.T) {
	l1 := Tar(Dir("x/"), File("x/in", "1"), File("f", "file"), Symlink("s", "/etc"), Dir("keep/"))
	l2 := Tar(File("x", "now a file"), Dir("f/"), File("s", "not a link"), Entry{Name: "keep/", Type: tar.TypeDir, Mode: 0o700})
	dir, _, err := apply(t, unpack.Options{}, l1, l2)
	require.NoError(t, err)
	assert.Equal(t, "now a file", read(t, filepath.Join(dir, "x")))
	fi, err := os.Lstat(filepath.Join(dir, "f"))
	require.NoError(t, err)
	assert.True(t, fi.IsDir())
	assert.Equal(t, "not a link", read(t, filepath.Join(dir, "s")), "a file replaces a symlink instead of writing through it")
	fi, err = os.Stat(filepath.Join(dir, "keep"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm(), "an existing directory takes the new mode")
}

func TestMetadata(t *testing.T) {
	fixture.RequireRoot(t)
	mtime := time.Date(2020, 5, 6, 7, 8, 9, 0, time.UTC)
	l := Tar(
		Entry{Name: "d/", Type: tar.TypeDir, Mode: 0o2775, UID: 5, GID: 6},
		Entry{Name: "d/f", Body: "x", Mode: 0o640, UID: 1000, GID: 1001, Xattrs: map[string]string{"user.k": "v", "trusted.x": "y", "security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00" + strings.Repeat("\x00", 12)}},
		Entry{Name: "d/l", Type: tar.TypeSymlink, Link: "f", UID: 7, GID: 8},
		Entry{Name: "d/h", Type: tar.TypeLink, Link: "d/f"},
		Entry{Name: "fifo", Type: tar.TypeFifo, Mode: 0o600},
		Entry{Name: "null", Type: tar.TypeChar, Major: 1, Minor: 3, Mode: 0o666},
		Entry{Name: "suid", Body: "x", Mode: 0o4755},
	)
	// Entries carry imagetest.Epoch; check times on one with a distinct one.
	l2 := func() []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: "t", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mtime, Format: tar.FormatPAX}))
		require.NoError(t, tw.Close())
		return buf.Bytes()
	}()
	dir, st, err := apply(t, unpack.Options{}, l, l2)
	require.NoError(t, err)
	fi, err := os.Stat(filepath.Join(dir, "d/f"))
	require.NoError(t, err)
	sys := fi.Sys().(*syscall.Stat_t)
	assert.Equal(t, uint32(1000), sys.Uid)
	assert.Equal(t, uint32(1001), sys.Gid)
	assert.Equal(t, os.FileMode(0o640), fi.Mode().Perm())
	assert.Equal(t, uint64(2), uint64(sys.Nlink), "d/h is a hardlink of d/f")
	assert.True(t, fi.ModTime().Equal(Epoch))
	di, err := os.Stat(filepath.Join(dir, "d"))
	require.NoError(t, err)
	assert.NotZero(t, di.Mode()&os.ModeSetgid, "a setgid directory keeps its bit")
	assert.True(t, di.ModTime().Equal(Epoch), "directory times are set after their content")
	li, err := os.Lstat(filepath.Join(dir, "d/l"))
	require.NoError(t, err)
	assert.Equal(t, uint32(7), li.Sys().(*syscall.Stat_t).Uid, "symlink owner, not its target's")
	ti, err := os.Stat(filepath.Join(dir, "t"))
	require.NoError(t, err)
	assert.True(t, ti.ModTime().Equal(mtime))
	fifo, err := os.Lstat(filepath.Join(dir, "fifo"))
	require.NoError(t, err)
	assert.NotZero(t, fifo.Mode()&os.ModeNamedPipe)
	assert.False(t, exists(filepath.Join(dir, "null")), "device dropped")
	si, err := os.Stat(filepath.Join(dir, "suid"))
	require.NoError(t, err)
	assert.Zero(t, si.Mode()&os.ModeSetuid)
	assert.Equal(t, 1, st.DevicesDropped)
	assert.Equal(t, 2, st.SetidCleared, "suid's bit and d/f's capability")
	assert.Equal(t, 1, st.XattrsDropped)
	require.NoError(t, validate.Tree(dir, validate.TreeOptions{}))

	// Allowed, devices and setuid bits stay.
	dir, st, err = apply(t, unpack.Options{AllowDevices: true, AllowSetid: true}, l)
	require.NoError(t, err)
	ni, err := os.Lstat(filepath.Join(dir, "null"))
	require.NoError(t, err)
	assert.NotZero(t, ni.Mode()&os.ModeCharDevice)
	si, err = os.Stat(filepath.Join(dir, "suid"))
	require.NoError(t, err)
	assert.NotZero(t, si.Mode()&os.ModeSetuid)
	assert.Zero(t, st.DevicesDropped+st.SetidCleared)
}

func TestRefusals(t *testing.T) {
	for name, c := range map[string]struct {
		layers [][]byte
		is     func(error) bool
	}{
		"dotdot":             {[][]byte{Tar(File("../x", ""))}, errdefs.IsInvalidArgument},
		"parent is a file":   {[][]byte{Tar(File("f", ""), File("f/x", ""))}, errdefs.IsInvalidArgument},
		"through a symlink":  {[][]byte{Tar(Symlink("s", "."), File("s/x", ""))}, errdefs.IsInvalidArgument},
		"hardlink to a dir":  {[][]byte{Tar(Dir("d/"), Hardlink("h", "d"))}, errdefs.IsInvalidArgument},
		"hardlink missing":   {[][]byte{Tar(Hardlink("h", "nothing"))}, errdefs.IsInvalidArgument},
		"truncated entry":    {[][]byte{Tar(Entry{Name: "a", Body: "xx", Size: 4096})}, errdefs.IsInvalidArgument},
		"not a tar":          {[][]byte{[]byte(strings.Repeat("garbage!", 200))}, errdefs.IsInvalidArgument},
		"sparse":             {[][]byte{Tar(Entry{Name: "a", Type: tar.TypeGNUSparse})}, errdefs.IsInvalidArgument},
		"root is not a dir":  {[][]byte{Tar(Entry{Name: ".", Type: tar.TypeReg})}, errdefs.IsInvalidArgument},
		"symlink then write": {[][]byte{Tar(Symlink("s", "/")), Tar(File("s/etc/x", ""))}, errdefs.IsInvalidArgument},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := apply(t, unpack.Options{}, c.layers...)
			require.Error(t, err)
			assert.True(t, c.is(err), "%v", err)
		})
	}
	_, _, err := apply(t, unpack.Options{Limits: layerLimits(2)}, Tar(File("a", ""), File("b", ""), File("c", "")))
	assert.True(t, errdefs.IsResourceExhausted(err), "%v", err)
}

func TestAbsoluteNamesConfined(t *testing.T) {
	victim := t.TempDir()
	dir, _, err := apply(t, unpack.Options{}, Tar(File(victim+"/x", "in"), File("/top", "t"), Hardlink("h", "/top")))
	require.NoError(t, err)
	assert.False(t, exists(filepath.Join(victim, "x")))
	assert.Equal(t, "in", read(t, filepath.Join(dir, victim, "x")))
	assert.Equal(t, "t", read(t, filepath.Join(dir, "h")))
}

func TestCanceled(t *testing.T) {
	dir := t.TempDir()
	u, err := unpack.New(dir, unpack.Options{})
	require.NoError(t, err)
	defer u.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var es []Entry
	for i := range 1000 {
		es = append(es, File(strings.Repeat("x", i%50+1)+string(rune('a'+i%26)), ""))
	}
	err = u.Apply(ctx, bytes.NewReader(Tar(es...)))
	assert.ErrorIs(t, err, context.Canceled)
}
