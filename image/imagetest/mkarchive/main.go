// Command mkarchive writes an image archive for scripts (benchmarks, manual
// checks): a busybox image built from the host's static busybox, or a
// large synthetic image of many files spread over several layers.
//
//	mkarchive [-format docker|oci] [-tag REF]... -busybox OUT
//	mkarchive [-format docker|oci] [-tag REF]... -size BYTES -files N [-layers N] [-gzip] OUT
//
// Docker archives are docker save's legacy format (uncompressed layers);
// -gzip compresses the layers. The synthetic content is pseudo-random
// (incompressible) and the same for the same flags.
package main

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berthrun/berth/image/dockersave"
	"github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/internal/fixture"
)

type tagList []string

func (t *tagList) String() string     { return strings.Join(*t, ",") }
func (t *tagList) Set(v string) error { *t = append(*t, v); return nil }

func main() {
	var (
		tags    tagList
		format  = flag.String("format", "docker", "docker or oci")
		busybox = flag.Bool("busybox", false, "a busybox image")
		size    = flag.Int64("size", 0, "total bytes of file content (synthetic image)")
		files   = flag.Int("files", 0, "number of files (synthetic image)")
		layers  = flag.Int("layers", 4, "number of layers (synthetic image)")
		gz      = flag.Bool("gzip", false, "gzip the layers")
	)
	flag.Var(&tags, "tag", "tag `REF` to put in the archive (repeatable)")
	flag.Parse()
	if flag.NArg() != 1 || (!*busybox && (*size <= 0 || *files <= 0)) {
		fmt.Fprintln(os.Stderr, "usage: mkarchive [-format docker|oci] [-tag REF]... (-busybox | -size BYTES -files N [-layers N] [-gzip]) OUT")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *format, tags, *busybox, *size, *files, *layers, *gz); err != nil {
		fmt.Fprintln(os.Stderr, "mkarchive:", err)
		os.Exit(1)
	}
}

func run(out, format string, tags []string, busybox bool, size int64, files, layers int, gz bool) error {
	work, err := os.MkdirTemp(filepath.Dir(out), ".mkarchive-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	var ls []layerFile
	if busybox {
		root := filepath.Join(work, "rootfs")
		if err := fixture.Busybox(root); err != nil {
			return err
		}
		b, err := imagetest.DirTar(root)
		if err != nil {
			return err
		}
		p := filepath.Join(work, "layer0")
		if gz {
			b = imagetest.Gzip(b)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			return err
		}
		ls = append(ls, layerFile{path: p, digest: digest.FromBytes(b), size: int64(len(b)), diffID: digest.FromBytes(imagetest.Uncompress(b))})
	} else {
		for i := range layers {
			l, err := syntheticLayer(work, i, size/int64(layers), files/layers, gz)
			if err != nil {
				return err
			}
			ls = append(ls, l)
		}
	}
	cfg := ocispec.Image{Created: &imagetest.Epoch, Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		Config: ocispec.ImageConfig{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}},
		RootFS: ocispec.RootFS{Type: "layers"}}
	for _, l := range ls {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.diffID)
	}
	cb, _ := json.Marshal(cfg)
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	if format == "oci" {
		err = writeOCI(tw, cb, ls, tags)
	} else {
		err = writeDocker(tw, cb, ls, tags)
	}
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

type layerFile struct {
	path           string
	digest, diffID digest.Digest
	size           int64
	gzip           bool
}

// syntheticLayer writes layer i: n files of about total bytes in all,
// in directories of 100, a few large files carrying half the bytes.
func syntheticLayer(work string, i int, total int64, n int, gz bool) (layerFile, error) {
	p := filepath.Join(work, fmt.Sprintf("layer%d", i))
	f, err := os.Create(p)
	if err != nil {
		return layerFile{}, err
	}
	defer f.Close()
	blobHash := sha256.New()
	diffHash := sha256.New()
	var w io.Writer = io.MultiWriter(f, blobHash)
	var zw *gzip.Writer
	if gz {
		zw, _ = gzip.NewWriterLevel(w, gzip.BestSpeed)
		w = zw
	}
	cw := &counter{w: io.MultiWriter(w, diffHash)}
	tw := tar.NewWriter(cw)
	rng := rand.New(rand.NewPCG(uint64(i), 42))
	if err := writeSyntheticFiles(tw, rng, i, total, n); err != nil {
		return layerFile{}, err
	}
	if err := tw.Close(); err != nil {
		return layerFile{}, err
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return layerFile{}, err
		}
	}
	fi, err := f.Stat()
	if err != nil {
		return layerFile{}, err
	}
	return layerFile{path: p, size: fi.Size(), gzip: gz,
		digest: digest.NewDigest(digest.SHA256, blobHash), diffID: digest.NewDigest(digest.SHA256, diffHash)}, nil
}

func fill(rng *rand.Rand, b []byte) {
	for len(b) >= 8 {
		v := rng.Uint64()
		for k := range 8 {
			b[k] = byte(v >> (8 * k))
		}
		b = b[8:]
	}
	for k := range b {
		b[k] = byte(rng.Uint32())
	}
}

type counter struct {
	w io.Writer
	n int64
}

func (c *counter) Write(p []byte) (int, error) { c.n += int64(len(p)); return c.w.Write(p) }

func writeFile(tw *tar.Writer, name string, b []byte) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b)), ModTime: imagetest.Epoch}); err != nil {
		return err
	}
	_, err := tw.Write(b)
	return err
}

func copyFile(tw *tar.Writer, name, p string, size int64) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: imagetest.Epoch}); err != nil {
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(tw, f)
	return err
}

func writeDocker(tw *tar.Writer, cfg []byte, ls []layerFile, tags []string) error {
	e := dockersave.ManifestEntry{Config: digest.FromBytes(cfg).Encoded() + ".json", RepoTags: tags}
	for _, l := range ls {
		id := l.digest.Encoded()
		if err := tw.WriteHeader(&tar.Header{Name: id + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: imagetest.Epoch}); err != nil {
			return err
		}
		if err := writeFile(tw, id+"/VERSION", []byte("1.0")); err != nil {
			return err
		}
		if err := copyFile(tw, id+"/layer.tar", l.path, l.size); err != nil {
			return err
		}
		e.Layers = append(e.Layers, id+"/layer.tar")
	}
	if err := writeFile(tw, e.Config, cfg); err != nil {
		return err
	}
	mb, err := dockersave.MarshalManifest([]dockersave.ManifestEntry{e})
	if err != nil {
		return err
	}
	return writeFile(tw, dockersave.ManifestFile, mb)
}

func writeOCI(tw *tar.Writer, cfg []byte, ls []layerFile, tags []string) error {
	if err := writeFile(tw, "oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}}
	m.SchemaVersion = 2
	for _, l := range ls {
		mt := ocispec.MediaTypeImageLayer
		if l.gzip {
			mt = ocispec.MediaTypeImageLayerGzip
		}
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: mt, Digest: l.digest, Size: l.size})
		if err := copyFile(tw, "blobs/sha256/"+l.digest.Encoded(), l.path, l.size); err != nil {
			return err
		}
	}
	if err := writeFile(tw, "blobs/sha256/"+digest.FromBytes(cfg).Encoded(), cfg); err != nil {
		return err
	}
	mb, _ := json.Marshal(m)
	if err := writeFile(tw, "blobs/sha256/"+digest.FromBytes(mb).Encoded(), mb); err != nil {
		return err
	}
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
	idx.SchemaVersion = 2
	d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(mb), Size: int64(len(mb))}
	if len(tags) > 0 {
		d.Annotations = map[string]string{"io.containerd.image.name": tags[0]}
	}
	idx.Manifests = []ocispec.Descriptor{d}
	ib, _ := json.Marshal(idx)
	return writeFile(tw, "index.json", ib)
}

// writeSyntheticFiles writes n files of layer i to tw, total bytes in all:
// one in a thousand big (half of total between them), the others of
// random sizes around the average of the rest; a hundred files to a
// directory, a hundred directories to a parent.
func writeSyntheticFiles(tw *tar.Writer, rng *rand.Rand, i int, total int64, n int) error {
	big := max(n/1000, 1)
	bigSize := total / 2 / int64(big)
	smallAvg := (total - bigSize*int64(big)) / int64(max(n-big, 1))
	buf := make([]byte, 1<<20)
	for j := range n {
		dir := fmt.Sprintf("layer%d/d%03d/e%03d", i, j/10000, (j/100)%100)
		if j%100 == 0 {
			for _, d := range []string{fmt.Sprintf("layer%d/", i), fmt.Sprintf("layer%d/d%03d/", i, j/10000), dir + "/"} {
				if j == 0 || strings.Count(d, "/") == 3 || (j%10000 == 0 && strings.Count(d, "/") == 2) {
					if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: imagetest.Epoch}); err != nil {
						return err
					}
				}
			}
		}
		sz := smallAvg/2 + rng.Int64N(smallAvg+1)
		if j < big {
			sz = bigSize
		}
		h := &tar.Header{Name: fmt.Sprintf("%s/f%06d", dir, j), Typeflag: tar.TypeReg, Mode: 0o644, Size: sz, ModTime: imagetest.Epoch}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		for left := sz; left > 0; {
			k := min(left, int64(len(buf)))
			fill(rng, buf[:k])
			if _, err := tw.Write(buf[:k]); err != nil {
				return err
			}
			left -= k
		}
	}
	return nil
}
