package image

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berthrun/berth/image/dockersave"
	"github.com/berthrun/berth/image/ocilayout"
)

// source is an archive's files: a tar read once and staged, or a layout
// directory read on demand.
type source interface {
	// doc returns the JSON document at archive path p, if there is one.
	doc(ctx context.Context, p string) ([]byte, bool, error)
	// blob returns the staged file at archive path p, which must exist.
	blob(ctx context.Context, p string) (*staged, error)
}

// descSource is a source that reads blobs by descriptor rather than by
// path (a remote). doc is set for a JSON document, clear for a layer.
type descSource interface {
	source
	blobDesc(ctx context.Context, d ocispec.Descriptor, doc bool) (*staged, error)
}

// docNames are the documents read into memory (capped) rather than staged.
var docNames = map[string]bool{
	dockersave.ManifestFile: true, ocilayout.IndexFile: true, ocilayout.LayoutFile: true, dockersave.RepositoriesFile: true,
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
		name, err := checkEntry(h, n, lim, kinds)
		if err != nil {
			return err
		}
		if err := t.add(ctx, name, h, tr, lim); err != nil {
			return err
		}
	}
}

// checkEntry checks the archive's nth entry h against the limits and the
// entries before it (kinds, by name, which it records h in); it returns
// h's clean name.
func checkEntry(h *tar.Header, n int, lim Limits, kinds map[string]byte) (string, error) {
	if n >= lim.MaxArchiveEntries {
		return "", fmt.Errorf("more than %d entries: %w", lim.MaxArchiveEntries, errdefs.ErrResourceExhausted)
	}
	if len(h.Name) > maxArchiveName || len(h.Linkname) > maxArchiveName {
		return "", fmt.Errorf("entry name of %d bytes exceeds %d: %w", max(len(h.Name), len(h.Linkname)), maxArchiveName, errdefs.ErrInvalidArgument)
	}
	name, err := dockersave.CleanPath(h.Name)
	if err != nil {
		return "", err
	}
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			// It stands for more bytes than it carries.
			return "", fmt.Errorf("entry %q: sparse files have no place in an image archive: %w", name, errdefs.ErrInvalidArgument)
		}
	}
	if k, dup := kinds[name]; dup && (k != tar.TypeDir || h.Typeflag != tar.TypeDir) {
		return "", fmt.Errorf("entry %q appears twice: %w", name, errdefs.ErrInvalidArgument)
	}
	kinds[name] = h.Typeflag
	return name, nil
}

// add keeps the entry h named name, its content read from tr: a document
// in memory, another file staged, a link's target.
func (t *tarSource) add(ctx context.Context, name string, h *tar.Header, tr io.Reader, lim Limits) error {
	switch h.Typeflag {
	case tar.TypeDir:
	case tar.TypeReg:
		if docNames[name] {
			b, err := readCapped(name, tr, lim.MaxJSONBytes)
			if err != nil {
				return readErr(err)
			}
			t.docs[name] = b
			return nil
		}
		alg, want := digest.SHA256, digest.Digest("")
		if d, ok := ocilayout.PathDigest(name); ok {
			alg, want = d.Algorithm(), d
		} else if d, ok := dockersave.ConfigDigest(name); ok {
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
	return nil
}

// maxArchiveName bounds the names of an archive's own entries (theirs are
// under 150 bytes): with MaxArchiveEntries it bounds the memory an import
// keeps for them.
const maxArchiveName = 512

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
