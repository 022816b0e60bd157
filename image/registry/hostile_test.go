package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/internal/errclass"
)

// storeFiles lists a store's files but its lock files: what a refused pull
// must leave as it was.
func storeFiles(t *testing.T, s *image.Store) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(s.Dir(), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(s.Dir(), p)
		if d.Name() == "lock" || strings.HasSuffix(d.Name(), ".lock") && !strings.HasPrefix(rel, "ingest/") {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			out = append(out, rel+"/")
			return nil
		}
		out = append(out, fmt.Sprintf("%s %d", rel, info.Size()))
		return nil
	})
	require.NoError(t, err)
	sort.Strings(out)
	return out
}

// seeded is a store that already holds an image tagged ubuntu:latest, the
// tag a hostile registry would like to move.
func seeded(t *testing.T) (*image.Store, digest.Digest) {
	t.Helper()
	s := newStore(t)
	im := smallImage("etc/host-ubuntu")
	im.Tags = []string{"ubuntu:latest"}
	f, err := os.CreateTemp(t.TempDir(), "seed")
	require.NoError(t, err)
	_, err = f.Write(imagetest.OCI(im))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	res, err := s.Import(context.Background(), f.Name(), image.ImportOptions{Tags: image.TagPolicy{Expect: im.Tags}})
	require.NoError(t, err)
	return s, res.Images[0].Digest
}

func index(entries ...ocispec.Descriptor) []byte {
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: entries}
	idx.SchemaVersion = 2
	b, _ := json.Marshal(idx)
	return b
}

func desc(mediaType string, b []byte) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
}

// A hostile registry: each case is refused with its class, in bounded
// time, and leaves the store and its tags as they were.
func TestHostileRegistry(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, f *fakeRegistry) // serves tenant/app:1
		class error
		opts  image.ImportOptions
	}{
		{"blob bytes do not match the digest", func(t *testing.T, f *fakeRegistry) {
			im := smallImage("etc/a")
			f.putImage("tenant/app", "1", im)
			// As many bytes as declared, one of them changed.
			b := append([]byte(nil), im.Layers[0]...)
			b[20] ^= 0xff
			f.blobs[digest.FromBytes(im.Layers[0])] = b
		}, errdefs.ErrInvalidArgument, image.ImportOptions{}},
		{"config does not match the digest", func(t *testing.T, f *fakeRegistry) {
			im := smallImage("etc/a")
			f.putImage("tenant/app", "1", im)
			f.blobs[im.ConfigDigest()] = []byte(`{"rootfs":{"type":"layers","diff_ids":[]}}`)
		}, errdefs.ErrInvalidArgument, image.ImportOptions{}},
		{"blob streams past its declared size", func(t *testing.T, f *fakeRegistry) {
			im := smallImage("etc/a")
			f.putImage("tenant/app", "1", im)
			ld := digest.FromBytes(im.Layers[0])
			f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.HasSuffix(r.URL.Path, ld.String()) || r.Method != http.MethodGet {
					return false
				}
				// The declared bytes, then garbage without end.
				w.Write(im.Layers[0])
				junk := make([]byte, 1<<20)
				for i := 0; i < 1<<14 && r.Context().Err() == nil; i++ {
					if _, err := w.Write(junk); err != nil {
						break
					}
				}
				return true
			})
		}, errdefs.ErrInvalidArgument, image.ImportOptions{}},
		{"layer inflates past the ratio", func(t *testing.T, f *fakeRegistry) {
			bomb := imagetest.GzipBomb(nil, 256<<20)
			f.putImage("tenant/app", "1", imagetest.NewImage([][]byte{bomb}, "/bin/sh"))
		}, errdefs.ErrResourceExhausted, image.ImportOptions{}},
		{"oversized manifest", func(t *testing.T, f *fakeRegistry) {
			im := smallImage("etc/a")
			var m map[string]any
			require.NoError(t, json.Unmarshal(im.Manifest(), &m))
			m["annotations"] = map[string]string{"pad": strings.Repeat("x", 9<<20)}
			b, _ := json.Marshal(m)
			f.putImage("tenant/app", "0", im)
			f.putManifest("tenant/app", ocispec.MediaTypeImageManifest, b, "1")
		}, errdefs.ErrResourceExhausted, image.ImportOptions{}},
		{"oversized manifest without a length", func(t *testing.T, f *fakeRegistry) {
			f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.Contains(r.URL.Path, "/manifests/") {
					return false
				}
				w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
				w.WriteHeader(http.StatusOK)
				w.Write([]byte(`{"schemaVersion":2,"annotations":{"pad":"`))
				junk := []byte(strings.Repeat("x", 1<<20))
				for i := 0; i < 64 && r.Context().Err() == nil; i++ {
					if _, err := w.Write(junk); err != nil {
						break
					}
					w.(http.Flusher).Flush()
				}
				return true
			})
		}, errdefs.ErrResourceExhausted, image.ImportOptions{}},
		{"indexes nested without end", func(t *testing.T, f *fakeRegistry) {
			// Each index names the next, deeper than any real image.
			child := nestedWith(100)
			for n := 99; n >= 0; n-- {
				f.putManifest("tenant/app", ocispec.MediaTypeImageIndex, child)
				child = nestedWith(n, desc(ocispec.MediaTypeImageIndex, child))
			}
			f.putManifest("tenant/app", ocispec.MediaTypeImageIndex, child, "1")
		}, errdefs.ErrInvalidArgument, image.ImportOptions{}},
		{"an index of a thousand indexes", func(t *testing.T, f *fakeRegistry) {
			var subs []ocispec.Descriptor
			for i := range 1000 {
				sub := index()
				sub = append(sub[:len(sub)-1], []byte(fmt.Sprintf(`,"annotations":{"n":"%d"}}`, i))...)
				f.putManifest("tenant/app", ocispec.MediaTypeImageIndex, sub)
				subs = append(subs, desc(ocispec.MediaTypeImageIndex, sub))
			}
			f.putManifest("tenant/app", ocispec.MediaTypeImageIndex, index(subs...), "1")
		}, errdefs.ErrResourceExhausted, image.ImportOptions{}},
		{"more layers than the limit", func(t *testing.T, f *fakeRegistry) {
			var ls [][]byte
			for i := range 5 {
				ls = append(ls, imagetest.Tar(imagetest.File(fmt.Sprint("f", i), "x")))
			}
			f.putImage("tenant/app", "1", imagetest.NewImage(ls, "/bin/sh"))
		}, errdefs.ErrResourceExhausted, image.ImportOptions{Limits: image.Limits{MaxLayers: 4}}},
		{"layer bigger than the pull may read", func(t *testing.T, f *fakeRegistry) {
			f.putImage("tenant/app", "1", smallImage("etc/a"))
		}, errdefs.ErrResourceExhausted, image.ImportOptions{Limits: image.Limits{MaxArchiveBytes: 100}}},
		{"layer that escapes the root", func(t *testing.T, f *fakeRegistry) {
			l := imagetest.Tar(imagetest.File("../../etc/evil", "x"))
			f.putImage("tenant/app", "1", imagetest.NewImage([][]byte{l}, "/bin/sh"))
		}, errdefs.ErrInvalidArgument, image.ImportOptions{}},
		{"manifest media type of a schema 1", func(t *testing.T, f *fakeRegistry) {
			f.putManifest("tenant/app", "application/vnd.docker.distribution.manifest.v1+prettyjws", []byte(`{"schemaVersion":1}`), "1")
		}, errdefs.ErrInvalidArgument, image.ImportOptions{}},
		{"index with no image for this platform", func(t *testing.T, f *fakeRegistry) {
			im := smallImage("etc/a")
			md := f.putImage("tenant/app", "arm", im)
			d := desc(ocispec.MediaTypeImageManifest, im.Manifest())
			d.Platform = &ocispec.Platform{OS: "plan9", Architecture: "mips"}
			require.Equal(t, md, d.Digest)
			f.putManifest("tenant/app", ocispec.MediaTypeImageIndex, index(d), "1")
		}, errdefs.ErrInvalidArgument, image.ImportOptions{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeRegistry(t)
			tc.setup(t, f)
			s, ubuntu := seeded(t)
			before := storeFiles(t, s)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Now()
			_, err := newClient(t, Options{}).Pull(ctx, s, f.host()+"/tenant/app:1", tc.opts)
			require.Error(t, err)
			require.Truef(t, errclass.Name(err) == errclass.Name(tc.class), "want %s, got %s: %v", errclass.Name(tc.class), errclass.Name(err), err)
			t.Logf("refused after %v: %v", time.Since(start).Round(time.Millisecond), err)
			require.Equal(t, before, storeFiles(t, s), "the store changed")
			im, err := s.Get(context.Background(), "ubuntu:latest")
			require.NoError(t, err)
			require.Equal(t, ubuntu, im.Digest)
		})
	}
}

// nestedWith is index n of an endless chain, naming its child.
func nestedWith(n int, child ...ocispec.Descriptor) []byte {
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: child, Annotations: map[string]string{"n": fmt.Sprint(n)}}
	if child == nil {
		idx.Manifests = []ocispec.Descriptor{}
	}
	idx.SchemaVersion = 2
	b, _ := json.Marshal(idx)
	return b
}
