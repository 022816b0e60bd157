package unpack_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	. "github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/image/layer"
	"github.com/berthrun/berth/image/unpack"
	"github.com/berthrun/berth/image/validate"
)

func layerLimits(entries int) layer.Limits { return layer.Limits{MaxEntries: entries} }

// FuzzApply applies arbitrary bytes as two layers into a root that sits
// beside a sentinel directory: whatever the input, nothing may appear or
// change outside the root, and no device or setuid file inside it.
func FuzzApply(f *testing.F) {
	f.Add(Tar(File("a", "x"), Symlink("s", "/"), Dir("d/"), Hardlink("h", "a")), Tar(File("s/x", "y"), File("d/.wh.a", "")))
	f.Add(Tar(Symlink("up", ".."), File("up/x", "")), Tar(File(".wh..wh..opq", "")))
	f.Add(Tar(Symlink("esc", "../../sentinel")), Tar(File("esc/pwned", "x"), Hardlink("l", "esc/keep")))
	f.Add([]byte("not a tar"), Gzip(Tar(File("a", "b"))))
	f.Fuzz(func(t *testing.T, l1, l2 []byte) {
		work := t.TempDir()
		sentinel := filepath.Join(work, "sentinel")
		if err := os.Mkdir(sentinel, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sentinel, "keep"), []byte("keep"), 0o644); err != nil {
			t.Fatal(err)
		}
		before := validate.Snapshot(t, work)
		root := filepath.Join(work, "root")
		if err := os.Mkdir(root, 0o755); err != nil {
			t.Fatal(err)
		}
		u, err := unpack.New(root, unpack.Options{Limits: layer.Limits{MaxEntries: 200, MaxPathLength: 256, MaxPathDepth: 16}})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range [][]byte{l1, l2} {
			if u.Apply(context.Background(), bytes.NewReader(l)) != nil {
				break
			}
		}
		u.Close()
		if err := validate.Tree(root, validate.TreeOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(root); err != nil {
			t.Fatal(err)
		}
		if after := validate.Snapshot(t, work); after != before {
			t.Fatalf("outside the root changed:\n%s\n---\n%s", before, after)
		}
	})
}
