package image

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/image/dockersave"
	"github.com/berthrun/berth/image/layer"
	"github.com/berthrun/berth/image/ocilayout"
)

// ImportOptions tune an import.
type ImportOptions struct {
	// Limits bound what the import reads; zero fields take DefaultLimits.
	Limits Limits
	// Tags says which tags the import may create; the zero value creates
	// none.
	Tags TagPolicy
	// Platform chooses among the manifests of a multi-platform image
	// (default: this host's). Images listed on their own are imported
	// whatever their platform, unless their descriptor names another.
	Platform *ocispec.Platform
	// Progress, when set, is called from the importing goroutine as the
	// archive is read, at most every 100 ms, and once at the end.
	Progress func(ImportProgress)
	// Verify, when set, is called once the whole input has been read and
	// before anything is committed; an error aborts the import. Glance
	// pulls use it to check the image's checksum.
	Verify func() error
}

// ImportProgress tells how far an import has read.
type ImportProgress struct {
	Read  int64 // bytes of the archive read so far
	Total int64 // its size, or 0 when unknown (a stream)
}

// ImportResult says what an import did.
type ImportResult struct {
	// Images are the images of the archive, now in the store.
	Images []ImportedImage
	// Tags lists every tag the archive claimed or the policy named, and
	// what became of it.
	Tags []TagChange
	// Read is the number of bytes read from the archive.
	Read int64
}

// ImportedImage is one image an import put in the store.
type ImportedImage struct {
	Digest digest.Digest // the manifest's digest: the image's identity
	Config digest.Digest // the config's digest (docker's image ID)
	// ArchiveTags are the tags the archive claimed for it, normalized.
	ArchiveTags []string
	// Existed is true when the store already had the image.
	Existed bool
}

// Import imports the docker-save archive or OCI image layout (a tar,
// possibly gzip- or zstd-compressed, or a directory) at src.
//
// Nothing from the archive is trusted: every blob's digest and every
// layer's diff ID is verified, JSON documents are size-capped, paths
// must stay inside the archive, layers are checked entry by entry, and
// opts.Limits stop the read as soon as one is exceeded. The store changes
// only when everything checked out, in one atomic step.
//
// Errors: invalid-argument for a malformed or hostile archive (including
// a digest that does not match its content), resource-exhausted for a
// limit, already-exists for a tag that would move without AllowRetag,
// not-found when src does not exist.
func (s *Store) Import(ctx context.Context, src string, opts ImportOptions) (*ImportResult, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return nil, fmt.Errorf("archive %q: %w", src, classifyOS(err))
	}
	var res *ImportResult
	if fi.IsDir() {
		res, err = s.importDir(ctx, src, opts)
	} else {
		var f *os.File
		if f, err = os.Open(src); err != nil {
			return nil, fmt.Errorf("archive %q: %w", src, classifyOS(err))
		}
		defer f.Close()
		res, err = s.importReader(ctx, f, fi.Size(), opts)
	}
	if err != nil {
		return nil, fmt.Errorf("archive %q: %w", src, err)
	}
	return res, nil
}

// ImportReader imports an archive (a tar, possibly compressed) from r, as
// Import does.
func (s *Store) ImportReader(ctx context.Context, r io.Reader, opts ImportOptions) (*ImportResult, error) {
	res, err := s.importReader(ctx, r, 0, opts)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	return res, nil
}

func (s *Store) importReader(ctx context.Context, r io.Reader, total int64, opts ImportOptions) (*ImportResult, error) {
	if err := opts.Tags.check(); err != nil {
		return nil, err
	}
	lim := opts.Limits.resolved()
	in, err := s.newIngest(lim)
	if err != nil {
		return nil, err
	}
	defer in.close()
	cr := &countReader{r: r, max: lim.MaxArchiveBytes, total: total, progress: opts.Progress}
	br := bufio.NewReaderSize(cr, 64<<10)
	stream := io.Reader(br)
	comp, err := layer.Detect(br)
	if err != nil {
		return nil, err
	}
	if comp != layer.None {
		dr, _, err := layer.Decompress(br)
		if err != nil {
			return nil, err
		}
		defer dr.Close()
		stream = &ratioReader{r: dr, raw: cr, max: lim.MaxArchiveBytes, ratio: lim.MaxRatio}
	}
	src := &tarSource{in: in, files: map[string]*staged{}, links: map[string]string{}, docs: map[string][]byte{}}
	if err := src.read(ctx, stream, lim); err != nil {
		return nil, err
	}
	// The whole input is read, padding included, before Verify looks at
	// what went through.
	if _, err := io.Copy(io.Discard, stream); err != nil {
		return nil, readErr(err)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return nil, readErr(err)
	}
	cr.report(true)
	if opts.Verify != nil {
		if err := opts.Verify(); err != nil {
			return nil, err
		}
	}
	return s.finish(ctx, in, src, opts, cr.n)
}

func (s *Store) importDir(ctx context.Context, dir string, opts ImportOptions) (*ImportResult, error) {
	if err := opts.Tags.check(); err != nil {
		return nil, err
	}
	lim := opts.Limits.resolved()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, classifyOS(err)
	}
	defer unix.Close(fd)
	in, err := s.newIngest(lim)
	if err != nil {
		return nil, err
	}
	defer in.close()
	src := &dirSource{in: in, root: fd, staged: map[string]*staged{}, count: &countReader{max: lim.MaxArchiveBytes, progress: opts.Progress}}
	if opts.Verify != nil {
		return nil, fmt.Errorf("Verify is for archives read as a stream: %w", errdefs.ErrInvalidArgument)
	}
	return s.finish(ctx, in, src, opts, 0)
}

func readErr(err error) error {
	if errdefs.IsResourceExhausted(err) || errdefs.IsInvalidArgument(err) || errdefs.IsCanceled(err) {
		return err
	}
	return fmt.Errorf("archive: %v: %w", err, errdefs.ErrInvalidArgument)
}

// finish resolves the archive's images and commits them.
func (s *Store) finish(ctx context.Context, in *ingest, src source, opts ImportOptions, read int64) (*ImportResult, error) {
	platform := ocilayout.HostPlatform()
	if opts.Platform != nil {
		platform = *opts.Platform
	}
	r := &resolver{src: src, in: in, lim: in.lim, platform: platform, seen: map[digest.Digest]*pending{}}
	ps, err := r.resolve(ctx)
	if err != nil {
		return nil, err
	}
	res, err := s.commit(ctx, in, ps, opts.Tags)
	if err != nil {
		return nil, err
	}
	if ds, ok := src.(*dirSource); ok {
		read = ds.count.n
	}
	res.Read = read
	return res, nil
}

// source is an archive's files: a tar read once and staged, or a layout
// directory read on demand.
type source interface {
	// doc returns the JSON document at archive path p, if there is one.
	doc(ctx context.Context, p string) ([]byte, bool, error)
	// blob returns the staged file at archive path p, which must exist.
	blob(ctx context.Context, p string) (*staged, error)
}

// docNames are the documents read into memory (capped) rather than staged.
var docNames = map[string]bool{
	dockersave.ManifestFile: true, ocilayout.IndexFile: true, ocilayout.LayoutFile: true, "repositories": true,
}

type tarSource struct {
	in    *ingest
	files map[string]*staged
	links map[string]string // symlinks and hardlinks inside the archive
	docs  map[string][]byte
}

func (t *tarSource) read(ctx context.Context, r io.Reader, lim Limits) error {
	tr := tar.NewReader(r)
	kinds := map[string]byte{}
	for n := 0; ; n++ {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if errdefs.IsResourceExhausted(err) || errdefs.IsCanceled(err) {
				return err
			}
			return fmt.Errorf("not a valid tar (truncated or corrupt): %v: %w", err, errdefs.ErrInvalidArgument)
		}
		if n >= lim.MaxArchiveEntries {
			return fmt.Errorf("more than %d entries: %w", lim.MaxArchiveEntries, errdefs.ErrResourceExhausted)
		}
		if len(h.Name) > maxArchiveName || len(h.Linkname) > maxArchiveName {
			return fmt.Errorf("entry name of %d bytes exceeds %d: %w", max(len(h.Name), len(h.Linkname)), maxArchiveName, errdefs.ErrInvalidArgument)
		}
		name, err := dockersave.CleanPath(h.Name)
		if err != nil {
			return err
		}
		if k, dup := kinds[name]; dup && (k != tar.TypeDir || h.Typeflag != tar.TypeDir) {
			return fmt.Errorf("entry %q appears twice: %w", name, errdefs.ErrInvalidArgument)
		}
		kinds[name] = h.Typeflag
		switch h.Typeflag {
		case tar.TypeDir:
		case tar.TypeReg:
			if docNames[name] {
				b, err := readCapped(name, tr, lim.MaxJSONBytes)
				if err != nil {
					return readErr(err)
				}
				t.docs[name] = b
				continue
			}
			alg, want := digest.SHA256, digest.Digest("")
			if d, ok := ocilayout.PathDigest(name); ok {
				alg, want = d.Algorithm(), d
			} else if d, ok := legacyConfigDigest(name); ok {
				want = d
			}
			st, err := t.in.stage(ctx, name, tr, alg, want)
			if err != nil {
				return readErr(err)
			}
			t.files[name] = st
		case tar.TypeSymlink:
			target := path.Join(path.Dir(name), h.Linkname)
			if path.IsAbs(h.Linkname) || target == ".." || strings.HasPrefix(target, "../") {
				return fmt.Errorf("entry %q: symlink to %q points outside the archive: %w", name, h.Linkname, errdefs.ErrInvalidArgument)
			}
			t.links[name] = target
		case tar.TypeLink:
			target, err := dockersave.CleanPath(h.Linkname)
			if err != nil {
				return fmt.Errorf("entry %q: hardlink: %w", name, err)
			}
			t.links[name] = target
		default:
			return fmt.Errorf("entry %q: type %q has no place in an image archive: %w", name, h.Typeflag, errdefs.ErrInvalidArgument)
		}
	}
}

// maxArchiveName bounds the names of an archive's own entries (theirs are
// under 150 bytes): with MaxArchiveEntries it bounds the memory an import
// keeps for them.
const maxArchiveName = 512

// legacyConfigDigest reads the digest a docker-save config's name gives
// ("HEX.json").
func legacyConfigDigest(name string) (digest.Digest, bool) {
	enc, ok := strings.CutSuffix(name, ".json")
	if !ok || strings.Contains(enc, "/") {
		return "", false
	}
	d := digest.NewDigestFromEncoded(digest.SHA256, enc)
	return d, d.Validate() == nil
}

func (t *tarSource) file(p string) (*staged, error) {
	for range 16 {
		if st, ok := t.files[p]; ok {
			return st, nil
		}
		next, ok := t.links[p]
		if !ok {
			return nil, fmt.Errorf("the archive has no file %q: %w", p, errdefs.ErrInvalidArgument)
		}
		p = next
	}
	return nil, fmt.Errorf("archive path %q: too many links: %w", p, errdefs.ErrInvalidArgument)
}

func (t *tarSource) doc(_ context.Context, p string) ([]byte, bool, error) {
	if b, ok := t.docs[p]; ok {
		return b, true, nil
	}
	if _, ok := t.files[p]; !ok {
		if _, ok := t.links[p]; !ok {
			return nil, false, nil
		}
	}
	st, err := t.file(p)
	if err != nil {
		return nil, false, err
	}
	b, err := t.in.readDoc(st)
	return b, err == nil, err
}

func (t *tarSource) blob(_ context.Context, p string) (*staged, error) { return t.file(p) }

// dirSource reads an OCI layout directory. Every file is opened under the
// directory with openat2 and may not be reached through a symlink.
type dirSource struct {
	in     *ingest
	root   int
	staged map[string]*staged
	count  *countReader
}

func (d *dirSource) open(p string) (*os.File, error) {
	how := &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV}
	fd, err := unix.Openat2(d.root, p, how)
	for err == unix.EINTR || err == unix.EAGAIN {
		fd, err = unix.Openat2(d.root, p, how)
	}
	if err == unix.ELOOP {
		return nil, fmt.Errorf("layout file %q is reached through a symlink: %w", p, errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return nil, classifyOS(&os.PathError{Op: "open", Path: p, Err: err})
	}
	f := os.NewFile(uintptr(fd), p)
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("layout file %q is not a regular file: %w", p, errdefs.ErrInvalidArgument)
	}
	return f, nil
}

func (d *dirSource) doc(_ context.Context, p string) ([]byte, bool, error) {
	f, err := d.open(p)
	if errdefs.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	d.count.r = f
	b, err := readCapped(p, d.count, d.in.lim.MaxJSONBytes)
	return b, err == nil, err
}

func (d *dirSource) blob(ctx context.Context, p string) (*staged, error) {
	if st, ok := d.staged[p]; ok {
		return st, nil
	}
	f, err := d.open(p)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("the layout has no file %q: %w", p, errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	alg, want := digest.SHA256, digest.Digest("")
	if dg, ok := ocilayout.PathDigest(p); ok {
		alg, want = dg.Algorithm(), dg
	}
	d.count.r = f
	st, err := d.in.stage(ctx, p, d.count, alg, want)
	if err != nil {
		return nil, readErr(err)
	}
	d.staged[p] = st
	return st, nil
}

// countReader counts what is read through it, stops past max and reports
// progress.
type countReader struct {
	r        io.Reader
	n        int64
	max      int64
	total    int64
	progress func(ImportProgress)
	last     time.Time
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.max {
		return n, fmt.Errorf("archive larger than %d bytes: %w", c.max, errdefs.ErrResourceExhausted)
	}
	c.report(false)
	return n, err
}

func (c *countReader) report(final bool) {
	if c.progress == nil {
		return
	}
	if now := time.Now(); final || now.Sub(c.last) >= 100*time.Millisecond {
		c.last = now
		c.progress(ImportProgress{Read: c.n, Total: c.total})
	}
}

// ratioReader bounds a compressed archive's decompressed stream.
type ratioReader struct {
	r     io.Reader
	raw   *countReader
	n     int64
	max   int64
	ratio int64
}

func (r *ratioReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n += int64(n)
	if r.n > r.max {
		return n, fmt.Errorf("archive decompresses to more than %d bytes: %w", r.max, errdefs.ErrResourceExhausted)
	}
	if r.n > layer.RatioGrace && r.n/r.ratio > r.raw.n {
		return n, fmt.Errorf("archive decompresses more than %d times its size: %w", r.ratio, errdefs.ErrResourceExhausted)
	}
	return n, err
}

// pending is an image resolved from the archive, not yet committed.
type pending struct {
	digest     digest.Digest
	manifest   []byte
	manifestSt *staged // nil when berth wrote the manifest (docker-save)
	config     *staged
	layers     []*staged
	tags       []string
	badTags    []string
}

func (p *pending) addTags(tags []string) {
	for _, t := range tags {
		n, err := NormalizeTag(t)
		if err != nil {
			if !contains(p.badTags, t) {
				p.badTags = append(p.badTags, t)
			}
			continue
		}
		if !contains(p.tags, n) {
			p.tags = append(p.tags, n)
		}
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// resolver finds the archive's images and verifies everything they use.
type resolver struct {
	src      source
	in       *ingest
	lim      Limits
	platform ocispec.Platform
	seen     map[digest.Digest]*pending
	order    []*pending
}

func (r *resolver) resolve(ctx context.Context) ([]*pending, error) {
	layout, hasLayout, err := r.src.doc(ctx, ocilayout.LayoutFile)
	if err != nil {
		return nil, err
	}
	idxDoc, hasIndex, err := r.src.doc(ctx, ocilayout.IndexFile)
	if err != nil {
		return nil, err
	}
	manDoc, hasManifest, err := r.src.doc(ctx, dockersave.ManifestFile)
	if err != nil {
		return nil, err
	}
	switch {
	case hasLayout || hasIndex:
		if !hasLayout || !hasIndex {
			return nil, fmt.Errorf("an OCI layout needs both %s and %s: %w", ocilayout.LayoutFile, ocilayout.IndexFile, errdefs.ErrInvalidArgument)
		}
		if err := ocilayout.ParseLayout(layout); err != nil {
			return nil, err
		}
		idx, err := ocilayout.ParseIndex(ocilayout.IndexFile, idxDoc)
		if err != nil {
			return nil, err
		}
		if err := r.index(ctx, idx); err != nil {
			return nil, err
		}
		if hasManifest {
			// docker 25 writes both: its manifest.json carries the tags.
			if err := r.dockerTags(manDoc); err != nil {
				return nil, err
			}
		}
	case hasManifest:
		if err := r.dockerSave(ctx, manDoc); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("neither a docker-save archive (no %s) nor an OCI layout (no %s): %w", dockersave.ManifestFile, ocilayout.IndexFile, errdefs.ErrInvalidArgument)
	}
	if len(r.order) == 0 {
		return nil, fmt.Errorf("no image for %s/%s in the archive: %w", r.platform.OS, r.platform.Architecture, errdefs.ErrInvalidArgument)
	}
	return r.order, nil
}

// index imports the images index.json lists.
func (r *resolver) index(ctx context.Context, idx *ocispec.Index) error {
	for _, d := range idx.Manifests {
		names := descriptorNames(d)
		switch {
		case ocilayout.IsManifest(d.MediaType):
			if d.Platform != nil && !ocilayout.MatchPlatform(r.platform, d.Platform) {
				continue
			}
			p, err := r.manifest(ctx, d)
			if err != nil {
				return err
			}
			p.addTags(names)
		case ocilayout.IsIndex(d.MediaType):
			m, err := r.choose(ctx, d, 1)
			if err != nil {
				return err
			}
			if m == nil {
				continue
			}
			p, err := r.manifest(ctx, *m)
			if err != nil {
				return err
			}
			p.addTags(names)
		}
		// Anything else (artifacts, signatures) is not an image: skipped.
	}
	return nil
}

// descriptorNames are the image names an index entry carries.
func descriptorNames(d ocispec.Descriptor) []string {
	if n := d.Annotations["io.containerd.image.name"]; n != "" {
		return []string{n}
	}
	if n := d.Annotations[ocispec.AnnotationRefName]; n != "" && strings.ContainsAny(n, "/:") {
		return []string{n}
	}
	return nil
}

// maxIndexDepth bounds nested indexes.
const maxIndexDepth = 4

// choose picks the manifest for the platform from a nested index.
func (r *resolver) choose(ctx context.Context, d ocispec.Descriptor, depth int) (*ocispec.Descriptor, error) {
	if depth > maxIndexDepth {
		return nil, fmt.Errorf("indexes nested deeper than %d: %w", maxIndexDepth, errdefs.ErrInvalidArgument)
	}
	b, _, err := r.doc(ctx, d)
	if err != nil {
		return nil, err
	}
	idx, err := ocilayout.ParseIndex(d.Digest.String(), b)
	if err != nil {
		return nil, err
	}
	for _, m := range idx.Manifests {
		if ocilayout.IsManifest(m.MediaType) && ocilayout.MatchPlatform(r.platform, m.Platform) {
			return &m, nil
		}
	}
	for _, m := range idx.Manifests {
		if ocilayout.IsIndex(m.MediaType) && (m.Platform == nil || ocilayout.MatchPlatform(r.platform, m.Platform)) {
			if found, err := r.choose(ctx, m, depth+1); err != nil || found != nil {
				return found, err
			}
		}
	}
	return nil, nil
}

// doc reads and verifies the blob a descriptor names, as a JSON document.
func (r *resolver) doc(ctx context.Context, d ocispec.Descriptor) ([]byte, *staged, error) {
	st, err := r.blobFor(ctx, d)
	if err != nil {
		return nil, nil, err
	}
	b, err := r.in.readDoc(st)
	return b, st, err
}

// blobFor returns the staged blob of descriptor d, checking its digest and
// size.
func (r *resolver) blobFor(ctx context.Context, d ocispec.Descriptor) (*staged, error) {
	if err := ocilayout.CheckDescriptor(d); err != nil {
		return nil, fmt.Errorf("descriptor: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	st, err := r.src.blob(ctx, ocilayout.BlobPath(d.Digest))
	if err != nil {
		return nil, err
	}
	if st.info.Digest != d.Digest {
		return nil, fmt.Errorf("blob %s: content has digest %s: %w", d.Digest, st.info.Digest, errdefs.ErrInvalidArgument)
	}
	if st.info.Size != d.Size {
		return nil, fmt.Errorf("blob %s: %d bytes, the descriptor says %d: %w", d.Digest, st.info.Size, d.Size, errdefs.ErrInvalidArgument)
	}
	return st, nil
}

// manifest verifies an image manifest and everything it names.
func (r *resolver) manifest(ctx context.Context, d ocispec.Descriptor) (*pending, error) {
	if p, ok := r.seen[d.Digest]; ok {
		return p, nil
	}
	b, st, err := r.doc(ctx, d)
	if err != nil {
		return nil, err
	}
	m, err := ocilayout.ParseManifest(d.Digest.String(), b)
	if err != nil {
		return nil, err
	}
	cfgBytes, cfgSt, err := r.doc(ctx, m.Config)
	if err != nil {
		return nil, err
	}
	p := &pending{digest: d.Digest, manifest: b, manifestSt: st, config: cfgSt}
	if err := r.layers(ctx, p, cfgBytes, m.Layers, func(i int) (*staged, error) {
		if !layer.IsLayerMediaType(m.Layers[i].MediaType) {
			return nil, fmt.Errorf("layer %d: media type %q is not supported: %w", i, m.Layers[i].MediaType, errdefs.ErrInvalidArgument)
		}
		return r.blobFor(ctx, m.Layers[i])
	}); err != nil {
		return nil, fmt.Errorf("image %s: %w", d.Digest, err)
	}
	r.seen[d.Digest] = p
	r.order = append(r.order, p)
	return p, nil
}

// layers checks an image's layers against its config's diff IDs.
func (r *resolver) layers(ctx context.Context, p *pending, cfgBytes []byte, descs []ocispec.Descriptor, get func(int) (*staged, error)) error {
	cfg, err := parseConfig(cfgBytes)
	if err != nil {
		return err
	}
	n := len(cfg.RootFS.DiffIDs)
	if n > r.lim.MaxLayers {
		return fmt.Errorf("%d layers exceed the limit of %d: %w", n, r.lim.MaxLayers, errdefs.ErrResourceExhausted)
	}
	if descs != nil && len(descs) != n {
		return fmt.Errorf("%d layers but the config names %d diff IDs: %w", len(descs), n, errdefs.ErrInvalidArgument)
	}
	for i := range n {
		if err := ctx.Err(); err != nil {
			return err
		}
		st, err := get(i)
		if err != nil {
			return err
		}
		if st.info.NotLayer != nil {
			return fmt.Errorf("layer %d (%s): %w", i, st.name, st.info.NotLayer)
		}
		if st.info.DiffID != cfg.RootFS.DiffIDs[i] {
			return fmt.Errorf("layer %d (%s): diff ID %s, the config says %s: %w", i, st.name, st.info.DiffID, cfg.RootFS.DiffIDs[i], errdefs.ErrInvalidArgument)
		}
		p.layers = append(p.layers, st)
	}
	return nil
}

func parseConfig(b []byte) (*ocispec.Image, error) {
	var c ocispec.Image
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("image config: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if c.RootFS.Type != "layers" {
		return nil, fmt.Errorf("image config: rootfs type %q is not \"layers\": %w", c.RootFS.Type, errdefs.ErrInvalidArgument)
	}
	for i, d := range c.RootFS.DiffIDs {
		if d.Validate() != nil || d.Algorithm() != digest.SHA256 {
			return nil, fmt.Errorf("image config: diff ID %d %q: %w", i, d, errdefs.ErrInvalidArgument)
		}
	}
	return &c, nil
}

// dockerSave resolves a legacy docker-save archive: berth writes each
// image's OCI manifest itself (uncompressed layers keep their digest, the
// config is docker's image ID), always the same bytes for the same image.
func (r *resolver) dockerSave(ctx context.Context, doc []byte) error {
	entries, err := dockersave.ParseManifest(doc)
	if err != nil {
		return err
	}
	for i, e := range entries {
		cfgSt, err := r.src.blob(ctx, e.Config)
		if err != nil {
			return fmt.Errorf("image %d: config: %w", i, err)
		}
		cfgBytes, err := r.in.readDoc(cfgSt)
		if err != nil {
			return err
		}
		p := &pending{config: cfgSt}
		if len(e.Layers) > r.lim.MaxLayers {
			return fmt.Errorf("image %d: %d layers exceed the limit of %d: %w", i, len(e.Layers), r.lim.MaxLayers, errdefs.ErrResourceExhausted)
		}
		descs := make([]ocispec.Descriptor, len(e.Layers))
		if err := r.layers(ctx, p, cfgBytes, descs, func(j int) (*staged, error) {
			return r.src.blob(ctx, e.Layers[j])
		}); err != nil {
			return fmt.Errorf("image %d: %w", i, err)
		}
		m := ocispec.Manifest{
			MediaType: ocispec.MediaTypeImageManifest,
			Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cfgSt.info.Digest, Size: cfgSt.info.Size},
			Layers:    []ocispec.Descriptor{},
		}
		m.SchemaVersion = 2
		for _, l := range p.layers {
			m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: l.info.Compression.MediaType(), Digest: l.info.Digest, Size: l.info.Size})
		}
		p.manifest, _ = json.Marshal(m)
		p.digest = digest.FromBytes(p.manifest)
		if old, ok := r.seen[p.digest]; ok {
			old.addTags(e.RepoTags)
			continue
		}
		p.addTags(e.RepoTags)
		r.seen[p.digest] = p
		r.order = append(r.order, p)
	}
	return nil
}

// dockerTags adds the RepoTags of a docker 25 manifest.json to the images
// of the same config.
func (r *resolver) dockerTags(doc []byte) error {
	entries, err := dockersave.ParseManifest(doc)
	if err != nil {
		return err
	}
	for _, e := range entries {
		d, ok := ocilayout.PathDigest(e.Config)
		if !ok {
			continue
		}
		for _, p := range r.order {
			if p.config.info.Digest == d {
				p.addTags(e.RepoTags)
			}
		}
	}
	return nil
}

// commit moves the images' blobs into the store and records the images
// and tags, all under the store lock; a failure leaves the store as it
// was.
func (s *Store) commit(ctx context.Context, in *ingest, ps []*pending, pol TagPolicy) (*ImportResult, error) {
	wants, skipped, err := pol.plan(ps)
	if err != nil {
		return nil, err
	}
	res := &ImportResult{}
	err = s.locked(ctx, func() error {
		idx, err := s.readIndex()
		if err != nil {
			return err
		}
		changes, err := pol.apply(idx, wants)
		if err != nil {
			return err
		}
		if err := s.place(in, idx, ps, res); err != nil {
			if idx, rerr := s.readIndex(); rerr == nil {
				_ = s.collect(idx)
			}
			return err
		}
		if err := s.writeIndex(idx); err != nil {
			if idx, rerr := s.readIndex(); rerr == nil {
				_ = s.collect(idx)
			}
			return err
		}
		res.Tags = append(changes, skipped...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// place puts the blobs of new images in blobs/ and records the images.
func (s *Store) place(in *ingest, idx *index, ps []*pending, res *ImportResult) error {
	now := time.Now().UTC()
	var dirs []string
	for _, p := range ps {
		im := ImportedImage{Digest: p.digest, Config: p.config.info.Digest, ArchiveTags: p.tags}
		if _, ok := idx.Images[p.digest]; ok {
			im.Existed = true
			res.Images = append(res.Images, im)
			continue
		}
		rec := &imageInfo{Config: p.config.info.Digest, Imported: now, Size: int64(len(p.manifest)) + p.config.info.Size}
		blobs := append([]*staged{p.config}, p.layers...)
		for _, b := range blobs {
			if err := s.placeBlob(b.info.Digest, b.path, &dirs); err != nil {
				return err
			}
		}
		rec.Blobs = append(rec.Blobs, p.config.info.Digest)
		for _, l := range p.layers {
			rec.Blobs = append(rec.Blobs, l.info.Digest)
			rec.Size += l.info.Size
		}
		mpath := ""
		if p.manifestSt != nil {
			mpath = p.manifestSt.path
		} else {
			mpath = filepath.Join(in.dir, "manifest-"+p.digest.Encoded())
			if err := os.WriteFile(mpath, p.manifest, 0o600); err != nil {
				return classifyOS(err)
			}
		}
		if err := s.placeBlob(p.digest, mpath, &dirs); err != nil {
			return err
		}
		idx.Images[p.digest] = rec
		res.Images = append(res.Images, im)
	}
	if s.fsync {
		for _, d := range dirs {
			if err := syncDir(d); err != nil {
				return err
			}
		}
	}
	return nil
}

// placeBlob renames a staged file into blobs/ unless the blob is there.
func (s *Store) placeBlob(d digest.Digest, staged string, dirs *[]string) error {
	dst := s.blobPath(d)
	if _, err := os.Lstat(dst); err == nil {
		return nil
	}
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return classifyOS(err)
	}
	if err := os.Chmod(staged, 0o444); err != nil {
		return classifyOS(err)
	}
	if err := os.Rename(staged, dst); err != nil {
		return classifyOS(err)
	}
	if !contains(*dirs, dir) {
		*dirs = append(*dirs, dir)
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return classifyOS(err)
	}
	defer f.Close()
	return classifyOS(f.Sync())
}
