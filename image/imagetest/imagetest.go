package imagetest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berthrun/berth/internal/tarutil"
)

// Epoch is the time stamp of every entry this package writes.
var Epoch = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// Entry is one tar entry. Type defaults to a regular file (a directory
// when Name ends in "/").
type Entry struct {
	Name     string
	Type     byte
	Body     string
	Mode     int64
	Link     string
	UID, GID int
	Major    int64
	Minor    int64
	Xattrs   map[string]string
	// Size overrides the header's size (for truncated or lying entries).
	Size int64
}

// File is a regular file entry.
func File(name, body string) Entry { return Entry{Name: name, Body: body} }

// Dir is a directory entry.
func Dir(name string) Entry { return Entry{Name: name, Type: tar.TypeDir} }

// Symlink is a symlink entry.
func Symlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeSymlink, Link: target}
}

// Hardlink is a hardlink entry.
func Hardlink(name, target string) Entry { return Entry{Name: name, Type: tar.TypeLink, Link: target} }

func (e Entry) header() *tar.Header {
	h := &tar.Header{Name: e.Name, Typeflag: e.Type, Linkname: e.Link, Uid: e.UID, Gid: e.GID,
		Mode: e.Mode, ModTime: Epoch, Devmajor: e.Major, Devminor: e.Minor, Format: tar.FormatPAX}
	if h.Typeflag == 0 {
		h.Typeflag = tar.TypeReg
		if strings.HasSuffix(e.Name, "/") {
			h.Typeflag = tar.TypeDir
		}
	}
	if h.Mode == 0 {
		h.Mode = 0o644
		if h.Typeflag == tar.TypeDir {
			h.Mode = 0o755
		}
	}
	if h.Typeflag == tar.TypeReg {
		h.Size = int64(len(e.Body))
	}
	if e.Size != 0 {
		h.Size = e.Size
	}
	for k, v := range e.Xattrs {
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		h.PAXRecords["SCHILY.xattr."+k] = v
	}
	return h
}

// Tar returns a tar of entries, in order. An entry whose Size lies makes
// a truncated tar (the writer's checks are bypassed).
func Tar(entries ...Entry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.header()
		must(tw.WriteHeader(h))
		if h.Typeflag == tar.TypeReg {
			if e.Size != 0 && e.Size != int64(len(e.Body)) {
				buf.WriteString(e.Body) // lying size: raw bytes, no closing
				return buf.Bytes()
			}
			_, err := tw.Write([]byte(e.Body))
			must(err)
		}
	}
	must(tw.Close())
	return buf.Bytes()
}

// Gzip compresses b.
func Gzip(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, err := zw.Write(b)
	must(err)
	must(zw.Close())
	return buf.Bytes()
}

// Zstd compresses b.
func Zstd(b []byte) []byte {
	zw, err := zstd.NewWriter(nil)
	must(err)
	return zw.EncodeAll(b, nil)
}

// DirTar returns a tar of the tree at dir, as a layer holds it (names
// relative to dir, owners and modes kept, hardlinks kept), every entry
// stamped with Epoch so the same tree gives the same bytes.
func DirTar(dir string) ([]byte, error) {
	var buf bytes.Buffer
	if err := tarutil.WriteDir(&buf, dir, tarutil.Options{ModTime: Epoch}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Image is an image built in memory: layer blobs as they go into an
// archive (compressed or not) and the config naming their diff IDs.
type Image struct {
	Layers [][]byte
	Config []byte
	// Tags go into the archive (RepoTags, or the index's annotations).
	Tags []string
}

// NewImage builds an image of layers (each a tar, possibly compressed)
// whose config runs cmd.
func NewImage(layers [][]byte, cmd ...string) *Image {
	cfg := ocispec.Image{
		Created:  &Epoch,
		Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		Config: ocispec.ImageConfig{
			Cmd:        cmd,
			Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			WorkingDir: "/",
		},
		RootFS: ocispec.RootFS{Type: "layers"},
	}
	for _, l := range layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, DiffID(l))
	}
	b, err := json.Marshal(cfg)
	must(err)
	return &Image{Layers: layers, Config: b}
}

// DiffID is the digest of a layer blob once uncompressed, computed as it
// streams.
func DiffID(b []byte) digest.Digest {
	var r io.Reader = bytes.NewReader(b)
	switch {
	case bytes.HasPrefix(b, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(r)
		must(err)
		r = zr
	case bytes.HasPrefix(b, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(r)
		must(err)
		defer zr.Close()
		r = zr
	}
	d, err := digest.FromReader(r)
	must(err)
	return d
}

// Uncompress undoes Gzip or Zstd (b is returned as it is otherwise).
func Uncompress(b []byte) []byte {
	switch {
	case bytes.HasPrefix(b, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(bytes.NewReader(b))
		must(err)
		out, err := io.ReadAll(zr)
		must(err)
		return out
	case bytes.HasPrefix(b, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(nil)
		must(err)
		out, err := zr.DecodeAll(b, nil)
		must(err)
		return out
	}
	return b
}

// ConfigDigest is docker's image ID.
func (im *Image) ConfigDigest() digest.Digest { return digest.FromBytes(im.Config) }

// Manifest is the image's OCI manifest.
func (im *Image) Manifest() []byte {
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: im.ConfigDigest(), Size: int64(len(im.Config))},
	}
	m.SchemaVersion = 2
	for _, l := range im.Layers {
		mt := ocispec.MediaTypeImageLayer
		switch {
		case bytes.HasPrefix(l, []byte{0x1f, 0x8b}):
			mt = ocispec.MediaTypeImageLayerGzip
		case bytes.HasPrefix(l, []byte{0x28, 0xb5, 0x2f, 0xfd}):
			mt = ocispec.MediaTypeImageLayerZstd
		}
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(l), Size: int64(len(l))})
	}
	b, err := json.Marshal(m)
	must(err)
	return b
}

// DockerSaveEntries are the entries of a legacy (v1.2) docker-save
// archive of images: "<id>.json" configs, "<layer>/layer.tar" layers and
// manifest.json. Tests edit them to build hostile archives.
func DockerSaveEntries(images ...*Image) []Entry {
	type item struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	var entries []Entry
	var manifest []item
	seen := map[string]bool{}
	for _, im := range images {
		it := item{Config: im.ConfigDigest().Encoded() + ".json", RepoTags: im.Tags}
		if !seen[it.Config] {
			entries = append(entries, File(it.Config, string(im.Config)))
			seen[it.Config] = true
		}
		for _, l := range im.Layers {
			id := digest.FromBytes(l).Encoded()
			name := id + "/layer.tar"
			if !seen[name] {
				entries = append(entries, Dir(id+"/"), File(id+"/VERSION", "1.0"), File(name, string(l)))
				seen[name] = true
			}
			it.Layers = append(it.Layers, name)
		}
		manifest = append(manifest, it)
	}
	b, err := json.Marshal(manifest)
	must(err)
	return append(entries, File("manifest.json", string(b)))
}

// DockerSave is a legacy docker-save archive of images.
func DockerSave(images ...*Image) []byte { return Tar(DockerSaveEntries(images...)...) }

// OCIEntries are the entries of an OCI image layout holding images, each
// named in index.json by its first tag.
func OCIEntries(images ...*Image) []Entry {
	entries := []Entry{File("oci-layout", `{"imageLayoutVersion":"1.0.0"}`), Dir("blobs/"), Dir("blobs/sha256/")}
	seen := map[digest.Digest]bool{}
	blob := func(b []byte) {
		d := digest.FromBytes(b)
		if !seen[d] {
			entries = append(entries, File("blobs/sha256/"+d.Encoded(), string(b)))
			seen[d] = true
		}
	}
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
	idx.SchemaVersion = 2
	for _, im := range images {
		for _, l := range im.Layers {
			blob(l)
		}
		blob(im.Config)
		m := im.Manifest()
		blob(m)
		desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(m), Size: int64(len(m))}
		if len(im.Tags) > 0 {
			desc.Annotations = map[string]string{"io.containerd.image.name": im.Tags[0]}
		}
		idx.Manifests = append(idx.Manifests, desc)
	}
	b, err := json.Marshal(idx)
	must(err)
	return append(entries, File("index.json", string(b)))
}

// OCI is an OCI image layout of images, as a tar.
func OCI(images ...*Image) []byte { return Tar(OCIEntries(images...)...) }

// WriteDir writes entries (regular files and directories only) under dir.
func WriteDir(dir string, entries ...Entry) error {
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].Name < entries[j].Name })
	for _, e := range entries {
		p := filepath.Join(dir, filepath.FromSlash(e.Name))
		if e.header().Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(e.Body), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// GzipBomb is a gzip stream of head followed by n zero bytes, built in a
// few milliseconds from repeated gzip members however large n is: a tar
// of a huge file of zeros, for instance, is
// GzipBomb(Tar(Entry{Name: "z", Size: n}), n+1024).
func GzipBomb(head []byte, n int64) []byte {
	out := Gzip(head)
	const chunk = 1 << 20
	member := Gzip(make([]byte, chunk))
	for ; n >= chunk; n -= chunk {
		out = append(out, member...)
	}
	return append(out, Gzip(make([]byte, n))...)
}

// SparseTar returns a tar holding one GNU sparse file (PAX format 0.1):
// name carries data but stands for realSize bytes, data first. Go's tar
// writer drops GNU sparse records, so the extended header is written as a
// regular entry and its type patched.
func SparseTar(name, data string, realSize int64) []byte {
	recs := ""
	for _, kv := range [][2]string{
		{"GNU.sparse.major", "0"}, {"GNU.sparse.minor", "1"},
		{"GNU.sparse.size", fmt.Sprint(realSize)}, {"GNU.sparse.numblocks", "1"}, {"GNU.sparse.map", fmt.Sprintf("0,%d", len(data))},
	} {
		rec := " " + kv[0] + "=" + kv[1] + "\n"
		n := len(rec) + 1
		for len(fmt.Sprint(n))+len(rec) != n {
			n++
		}
		recs += fmt.Sprint(n) + rec
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	must(tw.WriteHeader(&tar.Header{Name: "PaxHeaders/" + name, Typeflag: tar.TypeReg, Size: int64(len(recs)), Mode: 0o644, Format: tar.FormatUSTAR}))
	_, err := tw.Write([]byte(recs))
	must(err)
	must(tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Size: int64(len(data)), Mode: 0o644, Format: tar.FormatUSTAR}))
	_, err = tw.Write([]byte(data))
	must(err)
	must(tw.Close())
	b := buf.Bytes()
	b[156] = tar.TypeXHeader
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b[:512] {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}
