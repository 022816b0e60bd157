package image

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berthrun/berth/image/dockersave"
	"github.com/berthrun/berth/image/ocilayout"
	"github.com/berthrun/berth/internal/errclass"
)

// The formats Export writes.
const (
	// FormatDocker is a docker-save archive that is also an OCI layout,
	// as docker 25 writes it: docker load takes it, and berth imports it
	// back with the same manifest digest.
	FormatDocker = "docker"
	// FormatOCI is an OCI image layout in a tar.
	FormatOCI = "oci"
)

// ExportOptions tune Export.
type ExportOptions struct {
	// Format is FormatDocker (the default) or FormatOCI.
	Format string
}

// exportTime stamps every entry, so that the same image always exports to
// the same bytes (and the same Glance checksum).
var exportTime = time.Unix(0, 0)

// Export writes the image ref names to w as a tar of opts.Format. When
// ref is a tag the archive carries that tag; a digest exports the image
// untagged. Every blob is verified as it is read: a blob that no longer
// matches its digest ends the export with data-loss (what was written is
// then incomplete).
func (s *Store) Export(ctx context.Context, ref string, w io.Writer, opts ExportOptions) error {
	format := opts.Format
	if format == "" {
		format = FormatDocker
	}
	if format != FormatDocker && format != FormatOCI {
		return fmt.Errorf("export format %q (want %s or %s): %w", format, FormatDocker, FormatOCI, errdefs.ErrInvalidArgument)
	}
	idx, err := s.readIndex()
	if err != nil {
		return err
	}
	d, err := resolveRef(idx, ref)
	if err != nil {
		return err
	}
	var tags []string
	if _, byDigest := isDigest(ref); !byDigest {
		t, _ := NormalizeTag(ref)
		tags = []string{t}
	}
	// Open every blob while holding the lock, so that a concurrent Remove
	// cannot take one away half-way.
	var im *Image
	var blobs []*verifiedReader
	err = s.shared(ctx, func() error {
		var err error
		im, blobs, err = s.openBlobs(idx, d)
		return err
	})
	defer func() {
		for _, b := range blobs {
			b.Close()
		}
	}()
	if err != nil {
		return fmt.Errorf("image %q: %w", ref, err)
	}
	if err := writeExport(ctx, w, format, im, tags, blobs); err != nil {
		return fmt.Errorf("image %q: export: %w", ref, err)
	}
	return nil
}

func writeExport(ctx context.Context, w io.Writer, format string, im *Image, tags []string, blobs []*verifiedReader) error {
	tw := tar.NewWriter(w)
	lw := ocilayout.NewWriter(tw, exportTime)
	if err := lw.WriteLayout(); err != nil {
		return err
	}
	for _, b := range blobs {
		if err := ctx.Err(); err != nil {
			return err
		}
		size := b.size
		if size < 0 {
			fi, err := b.f.Stat()
			if err != nil {
				return errclass.OS(err)
			}
			size, b.size = fi.Size(), fi.Size()
		}
		if err := lw.WriteBlob(b.d, size, b); err != nil {
			return err
		}
	}
	mdesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: im.Digest, Size: blobs[len(blobs)-1].size}
	if err := lw.WriteIndex(mdesc, tags); err != nil {
		return err
	}
	if format == FormatDocker {
		layers := make([]digest.Digest, len(im.manifest.Layers))
		for i, l := range im.manifest.Layers {
			layers[i] = l.Digest
		}
		mb, err := dockersave.LayoutManifest(im.ConfigDigest, layers, tags)
		if err != nil {
			return err
		}
		if err := lw.WriteFile(dockersave.ManifestFile, mb); err != nil {
			return err
		}
	}
	return tw.Close()
}

// shared runs fn holding the store's lock shared: no Remove or commit
// runs meanwhile.
func (s *Store) shared(ctx context.Context, fn func() error) error {
	release, err := lock(ctx, filepath.Join(s.dir, lockFile), true)
	if err != nil {
		return err
	}
	defer release()
	return fn()
}

// openBlobs loads image d and opens its blobs, each once: config, layers
// and the manifest. It returns the blobs opened even when it fails, for
// the caller to close.
func (s *Store) openBlobs(idx *index, d digest.Digest) (*Image, []*verifiedReader, error) {
	im, err := s.load(idx, d)
	if err != nil {
		return nil, nil, err
	}
	descs := append([]ocispec.Descriptor{im.manifest.Config}, im.manifest.Layers...)
	descs = append(descs, ocispec.Descriptor{Digest: d})
	var blobs []*verifiedReader
	seen := map[digest.Digest]bool{}
	for _, desc := range descs {
		if seen[desc.Digest] {
			continue // a layer used twice is stored once
		}
		seen[desc.Digest] = true
		size := desc.Size
		if desc.Digest == d {
			size = -1
		}
		vr, err := s.openVerified(desc.Digest, size)
		if err != nil {
			return im, blobs, err
		}
		blobs = append(blobs, vr)
	}
	return im, blobs, nil
}
