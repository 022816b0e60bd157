package image_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/image"
	. "github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/image/validate"
)

// hostileCase is an archive built to attack the importer or the unpacker.
type hostileCase struct {
	name string
	// archive builds the archive; victim is a directory outside the store
	// and the unpack target that the attack aims at.
	archive func(victim string) []byte
	opts    image.ImportOptions
	// importErr is the class the import must fail with; nil when the
	// import is allowed (the attack is then on the unpack).
	importErr func(error) bool
	// unpackErr is the class Unpack must fail with (nil: it succeeds).
	unpackErr func(error) bool
	// check inspects a successful unpack.
	check func(t *testing.T, root, victim string)
}

// img wraps layers (tars) in a docker-save archive tagged x:1.
func img(layers ...[]byte) []byte {
	im := NewImage(layers, "/bin/sh")
	im.Tags = []string{"x:1"}
	return DockerSave(im)
}

// entries turns an image into its archive entries with edit applied.
func edited(im *Image, oci bool, edit func([]Entry) []Entry) []byte {
	var es []Entry
	if oci {
		es = OCIEntries(im)
	} else {
		es = DockerSaveEntries(im)
	}
	return Tar(edit(es)...)
}

func replaceEntry(es []Entry, name string, fn func(Entry) Entry) []Entry {
	out := append([]Entry(nil), es...)
	for i := range out {
		if out[i].Name == name {
			out[i] = fn(out[i])
		}
	}
	return out
}

func hostileCases() []hostileCase {
	simple := NewImage([][]byte{Tar(File("a", "a"))})
	layerName := digest.FromBytes(simple.Layers[0]).Encoded() + "/layer.tar"
	bomb := GzipBomb(Tar(Entry{Name: "zeros", Size: 64 << 20}), 64<<20+1024)
	return []hostileCase{
		{name: "path traversal", archive: func(string) []byte { return img(Tar(File("../../escape", "x"))) },
			importErr: errdefs.IsInvalidArgument},
		{name: "path traversal inside a name", archive: func(string) []byte { return img(Tar(Dir("a/"), File("a/../../escape", "x"))) },
			importErr: errdefs.IsInvalidArgument},
		{name: "absolute names are confined", archive: func(victim string) []byte {
			return img(Tar(File(victim+"/abs", "confined")))
		}, check: func(t *testing.T, root, victim string) {
			b, err := os.ReadFile(filepath.Join(root, victim, "abs"))
			require.NoError(t, err, "the absolute name lands under the root")
			assert.Equal(t, "confined", string(b))
		}},
		{name: "symlink then write", archive: func(victim string) []byte {
			return img(Tar(Symlink("escape", victim), File("escape/pwned", "x")))
		}, importErr: errdefs.IsInvalidArgument},
		{name: "symlink then write across layers", archive: func(victim string) []byte {
			return img(Tar(Symlink("escape", victim)), Tar(File("escape/sub/pwned", "x")))
		}, unpackErr: errdefs.IsInvalidArgument},
		{name: "relative symlink then write across layers", archive: func(victim string) []byte {
			return img(Tar(Symlink("escape", "../../../../../../../../"+victim)), Tar(Dir("escape/"), File("escape/pwned", "x")))
		}, check: func(t *testing.T, root, victim string) {
			fi, err := os.Lstat(filepath.Join(root, "escape"))
			require.NoError(t, err)
			assert.True(t, fi.IsDir(), "the directory entry replaced the symlink instead of following it")
		}},
		{name: "hardlink out of root", archive: func(string) []byte { return img(Tar(Hardlink("passwd", "../../../../etc/passwd"))) },
			importErr: errdefs.IsInvalidArgument},
		{name: "absolute hardlink is confined", archive: func(victim string) []byte {
			return img(Tar(Hardlink("stolen", victim+"/secret")))
		}, unpackErr: errdefs.IsInvalidArgument},
		{name: "hardlink through a symlink", archive: func(victim string) []byte {
			return img(Tar(Symlink("s", victim)), Tar(Hardlink("stolen", "s/sub/secret")))
		}, unpackErr: errdefs.IsInvalidArgument},
		{name: "whiteout aimed outside", archive: func(string) []byte { return img(Tar(File("../.wh.victim", ""))) },
			importErr: errdefs.IsInvalidArgument},
		{name: "whiteout through a symlink", archive: func(victim string) []byte {
			return img(Tar(Symlink("s", victim)), Tar(File("s/sub/.wh.secret", "")))
		}, unpackErr: errdefs.IsInvalidArgument},
		{name: "opaque directory through a symlink", archive: func(victim string) []byte {
			return img(Tar(Symlink("s", victim)), Tar(File("s/sub/.wh..wh..opq", "")))
		}, unpackErr: errdefs.IsInvalidArgument},
		{name: "device nodes are dropped", archive: func(string) []byte {
			return img(Tar(Entry{Name: "dev/sda", Type: tar.TypeBlock, Major: 8, Minor: 0, Mode: 0o660},
				Entry{Name: "dev/mem", Type: tar.TypeChar, Major: 1, Minor: 1, Mode: 0o640}, File("ok", "ok")))
		}, check: func(t *testing.T, root, _ string) {
			_, err := os.Lstat(filepath.Join(root, "dev/sda"))
			assert.True(t, os.IsNotExist(err), "no block device: %v", err)
			_, err = os.Lstat(filepath.Join(root, "dev/mem"))
			assert.True(t, os.IsNotExist(err), "no char device: %v", err)
		}},
		{name: "setuid and trusted xattrs are dropped", archive: func(string) []byte {
			return img(Tar(Entry{Name: "su", Body: "x", Mode: 0o4755},
				Entry{Name: "sg", Body: "x", Mode: 0o2755, Xattrs: map[string]string{"trusted.overlay.opaque": "y", "user.ok": "1"}}))
		}, check: func(t *testing.T, root, _ string) {
			fi, err := os.Stat(filepath.Join(root, "su"))
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o755), fi.Mode().Perm())
			assert.Zero(t, fi.Mode()&(os.ModeSetuid|os.ModeSetgid))
		}},
		{name: "duplicate archive entries", archive: func(string) []byte {
			return edited(simple, false, func(es []Entry) []Entry {
				return append(es, File("manifest.json", `[{"Config":"x.json","Layers":[]}]`))
			})
		}, importErr: errdefs.IsInvalidArgument},
		{name: "duplicate layer entries", archive: func(victim string) []byte {
			return img(Tar(File("a", "first"), File("a", "second")))
		}, check: func(t *testing.T, root, _ string) {
			b, _ := os.ReadFile(filepath.Join(root, "a"))
			assert.Equal(t, "second", string(b), "within a layer the last entry wins, as tar has it")
		}},
		{name: "truncated archive", archive: func(string) []byte {
			b := img(Tar(File("a", strings.Repeat("x", 10000))))
			return b[:len(b)/2]
		}, importErr: errdefs.IsInvalidArgument},
		{name: "truncated layer", archive: func(string) []byte {
			return img(Tar(Entry{Name: "a", Body: "short", Size: 100000}))
		}, importErr: errdefs.IsInvalidArgument},
		{name: "gzip bomb", archive: func(string) []byte { return img(bomb) },
			importErr: errdefs.IsResourceExhausted},
		{name: "compressed archive bomb", archive: func(string) []byte {
			return GzipBomb(Tar(File("manifest.json", "[]"), Entry{Name: "pad", Size: 32 << 20}), 32<<20+1024)
		}, importErr: errdefs.IsResourceExhausted},
		{name: "layer digest mismatch (oci)", archive: func(string) []byte {
			im := NewImage([][]byte{Tar(File("a", "a"))})
			return edited(im, true, func(es []Entry) []Entry {
				return replaceEntry(es, "blobs/sha256/"+digest.FromBytes(im.Layers[0]).Encoded(), func(e Entry) Entry {
					e.Body = string(Tar(File("a", "b")))
					return e
				})
			})
		}, importErr: errdefs.IsInvalidArgument},
		{name: "diff ID mismatch (docker-save)", archive: func(string) []byte {
			return edited(simple, false, func(es []Entry) []Entry {
				return replaceEntry(es, layerName, func(e Entry) Entry {
					e.Body = string(Tar(File("a", "evil")))
					return e
				})
			})
		}, importErr: errdefs.IsInvalidArgument},
		{name: "config digest mismatch (docker-save)", archive: func(string) []byte {
			return edited(simple, false, func(es []Entry) []Entry {
				return replaceEntry(es, simple.ConfigDigest().Encoded()+".json", func(e Entry) Entry {
					e.Body = strings.Replace(e.Body, "/bin", "/sbin", 1) + " "
					return e
				})
			})
		}, importErr: errdefs.IsInvalidArgument},
		{name: "missing layer", archive: func(string) []byte {
			return edited(simple, false, func(es []Entry) []Entry {
				var out []Entry
				for _, e := range es {
					if e.Name != layerName {
						out = append(out, e)
					}
				}
				return out
			})
		}, importErr: errdefs.IsInvalidArgument},
		{name: "manifest path with ..", archive: func(string) []byte {
			return edited(simple, false, func(es []Entry) []Entry {
				return replaceEntry(es, "manifest.json", func(e Entry) Entry {
					e.Body = strings.Replace(e.Body, layerName, "../../../etc/passwd", 1)
					return e
				})
			})
		}, importErr: errdefs.IsInvalidArgument},
		{name: "archive symlink out of the archive", archive: func(string) []byte {
			return edited(simple, false, func(es []Entry) []Entry {
				es = replaceEntry(es, layerName, func(e Entry) Entry { return Symlink(e.Name, "../../../etc/passwd") })
				return es
			})
		}, importErr: errdefs.IsInvalidArgument},
		{name: "oversized JSON", archive: func(string) []byte {
			return edited(simple, false, func(es []Entry) []Entry {
				return replaceEntry(es, "manifest.json", func(e Entry) Entry {
					e.Body = strings.TrimSuffix(e.Body, "]") + strings.Repeat(" ", 5000) + "]"
					return e
				})
			})
		}, opts: image.ImportOptions{Limits: image.Limits{MaxJSONBytes: 4096}}, importErr: errdefs.IsResourceExhausted},
		{name: "foreign layers", archive: func(string) []byte {
			return edited(simple, false, func(es []Entry) []Entry {
				return replaceEntry(es, "manifest.json", func(e Entry) Entry {
					e.Body = strings.Replace(e.Body, `"Layers"`, `"LayerSources":{"sha256:x":{"urls":["http://evil"]}},"Layers"`, 1)
					return e
				})
			})
		}, importErr: errdefs.IsInvalidArgument},
		{name: "device node in the archive itself", archive: func(string) []byte {
			return Tar(Entry{Name: "manifest.json", Type: tar.TypeChar, Major: 1, Minor: 1})
		}, importErr: errdefs.IsInvalidArgument},
		{name: "tag given to two images", archive: func(string) []byte {
			a, b := NewImage([][]byte{Tar(File("a", "1"))}), NewImage([][]byte{Tar(File("a", "2"))})
			a.Tags, b.Tags = []string{"x:1"}, []string{"x:1"}
			return DockerSave(a, b)
		}, opts: image.ImportOptions{Tags: image.TagPolicy{Expect: []string{"x:1"}}}, importErr: errdefs.IsInvalidArgument},
		{name: "too many layer entries", archive: func(string) []byte {
			var es []Entry
			for i := range 20 {
				es = append(es, File(fmt.Sprint(i), ""))
			}
			return img(Tar(es...))
		}, opts: image.ImportOptions{Limits: image.Limits{MaxLayerEntries: 10}}, importErr: errdefs.IsResourceExhausted},
		{name: "path too long", archive: func(string) []byte { return img(Tar(File(strings.Repeat("a", 300), ""))) },
			opts: image.ImportOptions{Limits: image.Limits{MaxPathLength: 255}}, importErr: errdefs.IsResourceExhausted},
		{name: "path too deep", archive: func(string) []byte { return img(Tar(File(strings.Repeat("a/", 40)+"f", ""))) },
			opts: image.ImportOptions{Limits: image.Limits{MaxPathDepth: 32}}, importErr: errdefs.IsResourceExhausted},
		{name: "too many layers", archive: func(string) []byte {
			var ls [][]byte
			for i := range 5 {
				ls = append(ls, Tar(File(fmt.Sprint(i), "")))
			}
			return img(ls...)
		}, opts: image.ImportOptions{Limits: image.Limits{MaxLayers: 4}}, importErr: errdefs.IsResourceExhausted},
		{name: "archive too large", archive: func(string) []byte { return img(Tar(File("a", strings.Repeat("x", 1<<20)))) },
			opts: image.ImportOptions{Limits: image.Limits{MaxArchiveBytes: 512 << 10}}, importErr: errdefs.IsResourceExhausted},
		{name: "uncompressed total too large", archive: func(string) []byte {
			return img(Gzip(Tar(File("a", strings.Repeat("x", 1<<20)))))
		}, opts: image.ImportOptions{Limits: image.Limits{MaxUncompressedBytes: 512 << 10, MaxRatio: -1}}, importErr: errdefs.IsResourceExhausted},
	}
}

// TestHostileArchives imports and unpacks every hostile archive. Each must
// be refused with its class or made harmless, and never change anything
// outside the store and the unpack target, nor the store when refused.
func TestHostileArchives(t *testing.T) {
	for _, tc := range hostileCases() {
		// With trees, the layers are unpacked as they stream in and the
		// image's tree put together before the commit (what Unpack
		// takes); with blobs only, Unpack reads them.
		for _, noRootfs := range []bool{false, true} {
			name := tc.name + "/trees"
			if noRootfs {
				name = tc.name + "/blobs"
			}
			tc := tc
			tc.opts.NoRootfs = noRootfs
			hostileArchive(t, name, tc)
		}
	}
}

func hostileArchive(t *testing.T, name string, tc hostileCase) {
	t.Run(name, func(t *testing.T) {
		ctx := context.Background()
		work := t.TempDir()
		victim := filepath.Join(work, "victim")
		require.NoError(t, os.MkdirAll(victim, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(victim, "secret"), []byte("keep"), 0o600))
		require.NoError(t, os.MkdirAll(filepath.Join(victim, "sub"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(victim, "sub", "secret"), []byte("keep"), 0o600))
		s, err := image.Open(filepath.Join(work, "store"))
		require.NoError(t, err)
		// An image and a tag already in the store: nothing may move them.
		prior := NewImage([][]byte{Tar(File("prior", "p"))})
		prior.Tags = []string{"x:1"}
		_, err = s.ImportReader(ctx, bytes.NewReader(DockerSave(prior)), image.ImportOptions{Tags: image.TagPolicy{Expect: prior.Tags}})
		require.NoError(t, err)
		storeBefore := validate.Snapshot(t, s.Dir())
		victimBefore := validate.Snapshot(t, victim)

		opts := tc.opts
		if opts.Tags.Expect == nil {
			opts.Tags.Prefix = "t"
		}
		res, err := s.ImportReader(ctx, bytes.NewReader(tc.archive(victim)), opts)
		assert.Equal(t, victimBefore, validate.Snapshot(t, victim), "nothing outside the store changed")
		require.NoError(t, validate.Store(s.Dir()))
		if tc.importErr != nil {
			require.Error(t, err)
			assert.True(t, tc.importErr(err), "wrong class: %v", err)
			assert.Equal(t, storeBefore, validate.Snapshot(t, s.Dir()), "the store is unchanged")
			im, err := s.Get(ctx, "x:1")
			require.NoError(t, err)
			assert.Equal(t, prior.ConfigDigest(), im.ConfigDigest, "x:1 did not move")
			return
		}
		require.NoError(t, err)
		target := filepath.Join(work, "rootfs")
		ur, err := s.Unpack(ctx, res.Images[0].Digest.String(), target, image.UnpackOptions{})
		assert.Equal(t, victimBefore, validate.Snapshot(t, victim), "nothing outside the target changed")
		if tc.unpackErr != nil {
			require.Error(t, err)
			assert.True(t, tc.unpackErr(err), "wrong class: %v", err)
			_, serr := os.Stat(target)
			assert.True(t, os.IsNotExist(serr), "a failed unpack leaves no target")
			return
		}
		require.NoError(t, err)
		t.Logf("unpack: %+v", ur.Stats)
		require.NoError(t, validate.Tree(target, validate.TreeOptions{}))
		if tc.check != nil {
			tc.check(t, target, victim)
		}
	})
}

// TestTagCollision: an archive may not move a tag of the store.
func TestTagCollision(t *testing.T) {
	ctx := context.Background()
	s, err := image.Open(t.TempDir())
	require.NoError(t, err)
	a := NewImage([][]byte{Tar(File("a", "a"))})
	a.Tags = []string{"ubuntu:latest"}
	b := NewImage([][]byte{Tar(File("b", "b"))})
	b.Tags = []string{"ubuntu:latest", "docker.io/library/other:1"}
	_, err = s.ImportReader(ctx, bytes.NewReader(DockerSave(a)), image.ImportOptions{Tags: image.TagPolicy{Expect: []string{"ubuntu"}}})
	require.NoError(t, err)
	before := validate.Snapshot(t, s.Dir())

	for _, pol := range []image.TagPolicy{
		{Expect: []string{"ubuntu:latest"}},
		{Expect: []string{"other:1", "docker.io/library/ubuntu"}},
	} {
		_, err = s.ImportReader(ctx, bytes.NewReader(DockerSave(b)), image.ImportOptions{Tags: pol})
		assert.True(t, errdefs.IsAlreadyExists(err), "%+v: %v", pol, err)
		assert.Equal(t, before, validate.Snapshot(t, s.Dir()), "refused whole: not even other:1 was created")
	}

	// The default policy creates no tag: the archive's claim is skipped.
	res, err := s.ImportReader(ctx, bytes.NewReader(DockerSave(b)), image.ImportOptions{})
	require.NoError(t, err)
	for _, c := range res.Tags {
		assert.Equal(t, image.TagSkipped, c.Action, "%+v", c)
	}
	assert.ElementsMatch(t, []string{"ubuntu:latest", "other:1"}, res.Images[0].ArchiveTags)
	im, err := s.Get(ctx, "ubuntu")
	require.NoError(t, err)
	assert.Equal(t, a.ConfigDigest(), im.ConfigDigest)

	// AllowRetag moves it and says so.
	res, err = s.ImportReader(ctx, bytes.NewReader(DockerSave(b)), image.ImportOptions{Tags: image.TagPolicy{Expect: []string{"ubuntu"}, AllowRetag: true}})
	require.NoError(t, err)
	var moved image.TagChange
	for _, c := range res.Tags {
		if c.Ref == "ubuntu:latest" {
			moved = c
		}
	}
	assert.Equal(t, image.TagMoved, moved.Action)
	im2, err := s.Get(ctx, "ubuntu")
	require.NoError(t, err)
	assert.Equal(t, im.Digest, moved.Previous)
	assert.Equal(t, b.ConfigDigest(), im2.ConfigDigest)
	require.NoError(t, validate.Store(s.Dir()))
}

func TestTagPrefixConfines(t *testing.T) {
	ctx := context.Background()
	s, err := image.Open(t.TempDir())
	require.NoError(t, err)
	a := NewImage([][]byte{Tar(File("a", "a"))})
	a.Tags = []string{"ubuntu:latest", "docker.io/library/debian:12", "registry.example:5000/x/y:1"}
	res, err := s.ImportReader(ctx, bytes.NewReader(DockerSave(a)), image.ImportOptions{Tags: image.TagPolicy{Prefix: "tenants/a"}})
	require.NoError(t, err)
	got := map[string]image.TagAction{}
	for _, c := range res.Tags {
		got[c.Ref] = c.Action
	}
	assert.Equal(t, map[string]image.TagAction{
		"tenants/a/ubuntu:latest":     image.TagCreated,
		"tenants/a/debian:12":         image.TagCreated,
		"registry.example:5000/x/y:1": image.TagSkipped, // a host:port cannot sit under a prefix
		"ubuntu:latest":               "",
	}, map[string]image.TagAction{
		"tenants/a/ubuntu:latest":     got["tenants/a/ubuntu:latest"],
		"tenants/a/debian:12":         got["tenants/a/debian:12"],
		"registry.example:5000/x/y:1": got["registry.example:5000/x/y:1"],
		"ubuntu:latest":               got["ubuntu:latest"],
	})
	list, err := s.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	for _, tag := range list[0].Tags {
		assert.True(t, strings.HasPrefix(tag, "tenants/a/"), "every tag is under the prefix: %s", tag)
	}
}

func TestTagPolicyRefusals(t *testing.T) {
	ctx := context.Background()
	s, err := image.Open(t.TempDir())
	require.NoError(t, err)
	a := NewImage([][]byte{Tar(File("a", "a"))})
	a.Tags = []string{"ubuntu:latest", "docker.io/library/debian:12"}
	arch := DockerSave(a)
	for _, pol := range []image.TagPolicy{
		{Prefix: "docker.io/library"},        // confines nothing
		{Prefix: "UPPER"},                    // not a repository path
		{Name: "x:1", Expect: []string{"a"}}, // exclusive
		{Expect: []string{"missing:1"}},      // not in the archive
		{Name: "Bad Ref"},
	} {
		_, err := s.ImportReader(ctx, bytes.NewReader(arch), image.ImportOptions{Tags: pol})
		assert.True(t, errdefs.IsInvalidArgument(err), "%+v: %v", pol, err)
	}
	res, err := s.ImportReader(ctx, bytes.NewReader(arch), image.ImportOptions{Tags: image.TagPolicy{Prefix: "docker.io/tenants/a/"}})
	require.NoError(t, err)
	var made []string
	for _, c := range res.Tags {
		if c.Action == image.TagCreated {
			made = append(made, c.Ref)
		}
	}
	assert.ElementsMatch(t, []string{"tenants/a/ubuntu:latest", "tenants/a/debian:12"}, made)
	_, err = s.Get(ctx, "ubuntu")
	assert.True(t, errdefs.IsNotFound(err), "the archive's own tag was not created: %v", err)
}

// A GNU sparse entry in the archive itself stands for more bytes than the
// archive carries (Go's tar reader expands it): refused for what it is,
// before any of it is read, rather than when the staged bytes reach a
// limit.
func TestSparseArchiveEntryRefused(t *testing.T) {
	s, err := image.Open(filepath.Join(t.TempDir(), "store"))
	require.NoError(t, err)
	before := validate.Snapshot(t, s.Dir())
	_, err = s.ImportReader(context.Background(), bytes.NewReader(SparseTar("layer.tar", "abcd", 8<<30)), image.ImportOptions{})
	require.Truef(t, errdefs.IsInvalidArgument(err), "%v", err)
	require.Contains(t, err.Error(), "sparse")
	require.Equal(t, before, validate.Snapshot(t, s.Dir()), "the store is unchanged")
}
