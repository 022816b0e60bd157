//go:build linux

package unpack_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	. "github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/image/unpack"
)

// unpackLayer unpacks one layer on its own with a LayerUnpacker into a new
// directory under work; nil when the layer does not unpack on its own.
func unpackLayer(t testing.TB, work string, opts unpack.Options, b []byte) *unpack.Layer {
	t.Helper()
	dir, err := os.MkdirTemp(work, "layer-")
	require.NoError(t, err)
	lu, err := unpack.NewLayer(dir, opts)
	require.NoError(t, err)
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err == nil {
			err = lu.Entry(h, tr)
		}
		if err != nil {
			lu.Close()
			return nil
		}
	}
	l, err := lu.Finish()
	if err != nil {
		return nil
	}
	return l
}

// compose builds the tree of layers the way an import does: each layer
// unpacked on its own, then merged in order, the stream applied instead
// where a layer did not unpack on its own or cannot be merged. It
// returns how many layers were merged.
func compose(t testing.TB, opts unpack.Options, layers ...[]byte) (string, unpack.Stats, int, error) {
	t.Helper()
	work := t.TempDir()
	var ls []*unpack.Layer
	for _, b := range layers {
		ls = append(ls, unpackLayer(t, work, opts, b))
	}
	root := filepath.Join(work, "root")
	require.NoError(t, os.Mkdir(root, 0o755))
	u, err := unpack.New(root, opts)
	require.NoError(t, err)
	merged := 0
	for i, l := range ls {
		if l != nil {
			err := u.Merge(context.Background(), l)
			if err == nil {
				merged++
				continue
			}
			if !errors.Is(err, unpack.ErrMergeConflict) {
				u.Close()
				t.Fatalf("layer %d: merge: %v", i, err)
			}
		}
		if err := u.Apply(context.Background(), bytes.NewReader(layers[i])); err != nil {
			u.Close()
			return root, u.Stats(), merged, err
		}
	}
	return root, u.Stats(), merged, u.Close()
}

// tree lists everything under root with what an unpack sets: type, mode,
// owner, size and content, link target, modification time (of
// directories only when one of the trees compared has the entries' time:
// the others are when the unpack made them), user xattrs, link count.
func tree(t testing.TB, root string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		line := fmt.Sprintf("%s %v %d:%d", rel, fi.Mode(), st.Uid, st.Gid)
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %q nlink=%d", b, st.Nlink)
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			line += " -> " + l
		}
		if !fi.IsDir() || fi.ModTime().Equal(Epoch) {
			line += " " + fi.ModTime().UTC().Format("2006-01-02T15:04:05.999999999")
		} else {
			line += " (made)"
		}
		if !fi.Mode().IsDir() && fi.Mode()&fs.ModeSymlink == 0 || fi.IsDir() {
			buf := make([]byte, 4096)
			n, _ := unix.Llistxattr(p, buf)
			var xs []string
			for _, x := range strings.Split(string(buf[:n]), "\x00") {
				if strings.HasPrefix(x, "user.") {
					v := make([]byte, 256)
					m, _ := unix.Lgetxattr(p, x, v)
					xs = append(xs, x+"="+string(v[:max(m, 0)]))
				}
			}
			sort.Strings(xs)
			if len(xs) > 0 {
				line += " " + strings.Join(xs, ",")
			}
		}
		lines = append(lines, line)
		return nil
	})
	require.NoError(t, err)
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// same checks that composing layers gives what applying them gives, and
// returns how many were merged.
func same(t *testing.T, opts unpack.Options, layers ...[]byte) int {
	t.Helper()
	want, wantStats, wantErr := apply(t, opts, layers...)
	got, gotStats, merged, gotErr := compose(t, opts, layers...)
	if (wantErr == nil) != (gotErr == nil) {
		t.Fatalf("apply: %v; merged %d layers: %v", wantErr, merged, gotErr)
	}
	if wantErr != nil {
		return merged
	}
	if a, b := tree(t, want), tree(t, got); a != b {
		t.Fatalf("merged %d layers: the trees differ:\napplied:\n%s\n\nmerged:\n%s", merged, a, b)
	}
	if wantStats != gotStats {
		t.Fatalf("stats: applied %+v, merged %+v", wantStats, gotStats)
	}
	return merged
}

// TestMergeIsApply lays layers over others both ways, in cases chosen
// to meet every rule of Merge: the trees must be the same, and the
// layers that must be merged are.
func TestMergeIsApply(t *testing.T) {
	base := Tar(Dir("etc/"), File("etc/passwd", "root"), Dir("usr/"), Dir("usr/bin/"), File("usr/bin/sh", "sh"),
		Symlink("bin", "usr/bin"), Dir("var/"), File("var/old", "old"), Dir("o/"), File("o/a", "a"), Dir("o/sub/"), File("o/sub/b", "b"),
		Entry{Name: "g/", Type: tar.TypeDir, Mode: 0o2775, GID: 50}, File("hl", "x"), Hardlink("hl2", "hl"))
	for name, c := range map[string]struct {
		layers [][]byte
		merged int // at least
	}{
		"disjoint":          {[][]byte{base, Tar(Dir("app/"), File("app/x", "x"), Dir("app/d/"), File("app/d/y", "y"))}, 2},
		"into dirs":         {[][]byte{base, Tar(File("usr/bin/ls", "ls"), File("etc/hosts", "h"))}, 2},
		"implicit":          {[][]byte{base, Tar(File("usr/lib/x/y", "y"), File("new/deep/z", "z"))}, 2},
		"dir meta":          {[][]byte{base, Tar(Entry{Name: "etc/", Type: tar.TypeDir, Mode: 0o700, UID: 3, GID: 4, Xattrs: map[string]string{"user.a": "b"}}, File("etc/f", ""))}, 2},
		"root meta":         {[][]byte{base, Tar(Entry{Name: "./", Type: tar.TypeDir, Mode: 0o711}, File("r", ""))}, 2},
		"replace":           {[][]byte{base, Tar(File("usr", "now a file"), Dir("var/old/"), File("var/old/in", "in"), Symlink("etc/passwd", "/x"))}, 2},
		"whiteouts":         {[][]byte{base, Tar(File(".wh.var", ""), File("etc/.wh.passwd", ""), File("usr/bin/.wh.nothing", ""), File("none/.wh.x", ""))}, 2},
		"recreate":          {[][]byte{base, Tar(File("etc/.wh.passwd", ""), File("etc/passwd", "new"))}, 2},
		"opaque":            {[][]byte{base, Tar(Dir("o/"), File("o/new", "n"), File("o/.wh..wh..opq", ""), File("o/after", "a"))}, 2},
		"opaque dir":        {[][]byte{base, Tar(Dir("o/sub/"), File("o/sub/c", "c"), File("o/.wh..wh..opq", ""))}, 2},
		"whiteout then dir": {[][]byte{base, Tar(File(".wh.o", ""), Dir("o/"), File("o/fresh", "f"))}, 2},
		"hardlinks":         {[][]byte{base, Tar(File("app/a", "a"), Hardlink("app/b", "app/a"), Hardlink("etc/c", "app/a"))}, 2},
		"three":             {[][]byte{base, Tar(File("usr/bin/ls", "ls")), Tar(File("usr/bin/.wh.ls", ""), File("usr/bin/cp", "cp"))}, 3},
		"bottom dups":       {[][]byte{Tar(File("a", "1"), File("a", "2"), Dir("d/"), File("d/x", ""), File("d/.wh.x", "")), Tar(File("b", ""))}, 2},
		// Not merged: applying the stream is the only way to tell.
		"through symlink":      {[][]byte{base, Tar(File("bin/x", "x"))}, 1},
		"dir over file late":   {[][]byte{base, Tar(File("var/old/in", "in"), Dir("var/old/"))}, 1},
		"dup over others":      {[][]byte{base, Tar(File("etc/x", "1"), File("etc/x", "2"))}, 1},
		"whiteout own":         {[][]byte{base, Tar(File("etc/x", "1"), File(".wh.etc", ""))}, 1},
		"setgid dir":           {[][]byte{base, Tar(File("g/f", "f"))}, 1},
		"whiteout via symlink": {[][]byte{base, Tar(File("bin/.wh.sh", ""))}, 1},
		"hardlink below":       {[][]byte{base, Tar(Hardlink("etc/pw2", "etc/passwd"))}, 1},
	} {
		t.Run(name, func(t *testing.T) {
			merged := same(t, unpack.Options{}, c.layers...)
			assert.GreaterOrEqual(t, merged, c.merged)
			if c.merged < len(c.layers) {
				assert.Less(t, merged, len(c.layers), "a layer merged that should not")
			}
		})
	}
}

// TestMergeKeepsPolicy: a layer unpacked on its own with one policy is not
// merged into a tree of another.
func TestMergeKeepsPolicy(t *testing.T) {
	work := t.TempDir()
	l := unpackLayer(t, work, unpack.Options{AllowSetid: true}, Tar(Entry{Name: "s", Body: "x", Mode: 0o4755}))
	require.NotNil(t, l)
	root := filepath.Join(work, "root")
	require.NoError(t, os.Mkdir(root, 0o755))
	u, err := unpack.New(root, unpack.Options{})
	require.NoError(t, err)
	defer u.Close()
	assert.ErrorIs(t, u.Merge(context.Background(), l), unpack.ErrMergeConflict)
}

// FuzzMerge builds layers from the fuzzer's bytes, a few entries each
// over a small set of names, and checks that composing them as an import
// does gives the tree applying them gives.
func FuzzMerge(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255, 11, 12, 13, 14, 15, 16, 17})
	f.Add([]byte{3, 4, 33, 255, 40, 7, 255, 9, 9, 17, 25})
	f.Add([]byte{1, 2, 8, 16, 255, 5, 6, 7, 255, 80, 81, 82, 83})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 64 {
			return
		}
		same(t, unpack.Options{}, fuzzLayers(b)...)
	})
}

var fuzzNames = []string{"a", "b", "a/b", "a/c", "a/b/c", "d", "d/e", "a/b/d"}

// fuzzLayers reads layers from b: 255 ends a layer; each other byte is an
// entry, its low 3 bits the name, the rest its kind.
func fuzzLayers(b []byte) [][]byte {
	var layers [][]byte
	var es []Entry
	for _, c := range append(b, 255) {
		if c == 255 {
			layers = append(layers, Tar(es...))
			es = nil
			continue
		}
		name := fuzzNames[c&7]
		other := fuzzNames[(c>>3)&7]
		switch c >> 3 % 10 {
		case 0:
			es = append(es, File(name, "f"+name))
		case 1:
			es = append(es, Dir(name+"/"))
		case 2:
			es = append(es, Symlink(name, other))
		case 3:
			es = append(es, Hardlink(name, other))
		case 4:
			dir, base := filepath.Split(name)
			es = append(es, File(dir+".wh."+base, ""))
		case 5:
			es = append(es, File(name+"/.wh..wh..opq", ""))
		case 6:
			es = append(es, Entry{Name: name + "/", Type: tar.TypeDir, Mode: 0o2750, UID: 1, GID: 2})
		case 7:
			es = append(es, Entry{Name: name, Body: "o", Mode: 0o600, UID: 7, GID: 8, Xattrs: map[string]string{"user.x": name}})
		case 8:
			es = append(es, Entry{Name: name + "/", Type: tar.TypeDir, Mode: 0o700, Xattrs: map[string]string{"user.d": other}})
		default:
			es = append(es, Entry{Name: "./", Type: tar.TypeDir, Mode: 0o750})
		}
	}
	return layers
}

// mergeCases is how many random layer sets TestMergeRandom tries.
var mergeCases = flag.Int("merge-cases", 300, "random layer sets TestMergeRandom composes")

// TestMergeRandom is FuzzMerge over a fixed series of random inputs.
func TestMergeRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var merged, layers int
	defer func() { t.Logf("%d layers, %d merged", layers, merged) }()
	for i := range *mergeCases {
		b := make([]byte, 2+rng.IntN(40))
		for j := range b {
			b[j] = byte(rng.IntN(256))
			if rng.IntN(8) == 0 {
				b[j] = 255
			}
		}
		ls := fuzzLayers(b)
		layers += len(ls)
		t.Run(fmt.Sprint(i), func(t *testing.T) { merged += same(t, unpack.Options{}, ls...) })
	}
}

// A directory with a default ACL gives what is created in it an ACL of
// its own, which a file moved in would lack: no merge there, and no layer
// merged twice.
func TestMergeRefusesDefaultACLAndReuse(t *testing.T) {
	work := t.TempDir()
	root := filepath.Join(work, "root")
	require.NoError(t, os.Mkdir(root, 0o755))
	// version 2; user::rwx, group::r-x, other::r-x.
	acl := []byte{2, 0, 0, 0, 1, 0, 7, 0, 0xff, 0xff, 0xff, 0xff, 4, 0, 5, 0, 0xff, 0xff, 0xff, 0xff, 0x20, 0, 5, 0, 0xff, 0xff, 0xff, 0xff}
	if err := unix.Setxattr(root, "system.posix_acl_default", acl, 0); errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
		t.Skipf("no ACLs on %s: %v", work, err)
	} else {
		require.NoError(t, err)
	}
	u, err := unpack.New(root, unpack.Options{})
	require.NoError(t, err)
	defer u.Close()
	require.NoError(t, u.Apply(context.Background(), bytes.NewReader(Tar(File("a", "a")))))
	l := unpackLayer(t, work, unpack.Options{}, Tar(File("f", "x")))
	require.NotNil(t, l)
	assert.ErrorIs(t, u.Merge(context.Background(), l), unpack.ErrMergeConflict)

	plain := filepath.Join(work, "plain")
	require.NoError(t, os.Mkdir(plain, 0o755))
	u2, err := unpack.New(plain, unpack.Options{})
	require.NoError(t, err)
	defer u2.Close()
	l2 := unpackLayer(t, work, unpack.Options{}, Tar(File("g", "y")))
	require.NoError(t, u2.Merge(context.Background(), l2))
	assert.Error(t, u2.Merge(context.Background(), l2), "a layer merged twice")
}
