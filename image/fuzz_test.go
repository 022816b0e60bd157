package image_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/berthrun/berth/image"
	. "github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/image/validate"
)

// FuzzImport feeds arbitrary archives to the importer of a store that
// already holds a tagged image: an import either succeeds and leaves a
// consistent store that still has the tag where it was, or fails with a
// class berth documents and leaves the store byte for byte as it was.
func FuzzImport(f *testing.F) {
	im := NewImage([][]byte{Tar(File("a", "x"), Symlink("s", "/etc")), Gzip(Tar(File("b", "y")))})
	im.Tags = []string{"x:1", "y:1"}
	f.Add(DockerSave(im))
	f.Add(OCI(im))
	f.Add(Tar(File("manifest.json", `[{"Config":"../c.json","Layers":["a/layer.tar"]}]`)))
	f.Add(Tar(File("oci-layout", `{"imageLayoutVersion":"1.0.0"}`), File("index.json", `{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1}]}`)))
	prior := NewImage([][]byte{Tar(File("p", "p"))})
	prior.Tags = []string{"x:1"}
	priorArchive := DockerSave(prior)
	lim := image.Limits{MaxArchiveBytes: 1 << 20, MaxUncompressedBytes: 4 << 20, MaxLayerEntries: 100, MaxJSONBytes: 64 << 10, MaxArchiveEntries: 100, MaxLayers: 8}
	f.Fuzz(func(t *testing.T, b []byte) {
		ctx := context.Background()
		dir := filepath.Join(t.TempDir(), "store")
		s, err := image.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.ImportReader(ctx, bytes.NewReader(priorArchive), image.ImportOptions{Tags: image.TagPolicy{Expect: prior.Tags}}); err != nil {
			t.Fatal(err)
		}
		before := validate.Snapshot(t, dir)
		_, err = s.ImportReader(ctx, bytes.NewReader(b), image.ImportOptions{Limits: lim, Tags: image.TagPolicy{Prefix: "fuzz"}})
		if err != nil {
			if !errdefs.IsInvalidArgument(err) && !errdefs.IsResourceExhausted(err) {
				t.Fatalf("undocumented error class: %v", err)
			}
			if after := validate.Snapshot(t, dir); after != before {
				t.Fatalf("a refused import changed the store:\n%s\n---\n%s", before, after)
			}
		}
		if err := validate.Store(dir); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, "x:1")
		if err != nil || got.ConfigDigest != prior.ConfigDigest() {
			t.Fatalf("x:1 moved: %v %v", got, err)
		}
		os.RemoveAll(dir)
	})
}
