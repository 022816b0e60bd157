package ocilayout

import (
	"context"
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ReadIndex checks a layout's oci-layout file and parses its index.json.
// Errors are invalid-argument.
func ReadIndex(layout, index []byte) (*ocispec.Index, error) {
	if err := ParseLayout(layout); err != nil {
		return nil, err
	}
	return ParseIndex(IndexFile, index)
}

// MaxIndexDepth bounds nested indexes.
const MaxIndexDepth = 4

// ReadDocFunc reads the document a descriptor names from the layout. It
// is the caller's to check the content against the descriptor's digest
// and size, and to cap its length.
type ReadDocFunc func(ctx context.Context, d ocispec.Descriptor) ([]byte, error)

// WalkIndex calls fn, in the index's order, for each image manifest idx
// lists for platform, with the image names its index entry carries. A
// manifest listed on its own is taken unless its descriptor names another
// platform; of a nested index (read with read, at most MaxIndexDepth
// deep) the manifest for platform is taken, or none. Entries that are
// neither (artifacts, signatures) are skipped.
func WalkIndex(ctx context.Context, idx *ocispec.Index, platform ocispec.Platform, read ReadDocFunc, fn func(m ocispec.Descriptor, names []string) error) error {
	for _, d := range idx.Manifests {
		names := DescriptorNames(d)
		switch {
		case IsManifest(d.MediaType):
			if d.Platform != nil && !MatchPlatform(platform, d.Platform) {
				continue
			}
			if err := fn(d, names); err != nil {
				return err
			}
		case IsIndex(d.MediaType):
			m, err := choose(ctx, d, platform, read, 1)
			if err != nil {
				return err
			}
			if m == nil {
				continue
			}
			if err := fn(*m, names); err != nil {
				return err
			}
		}
	}
	return nil
}

// DescriptorNames are the image names an index entry carries: containerd's
// io.containerd.image.name annotation, or an org.opencontainers.image.ref.name
// that is a whole reference (not a bare tag).
func DescriptorNames(d ocispec.Descriptor) []string {
	if n := d.Annotations["io.containerd.image.name"]; n != "" {
		return []string{n}
	}
	if n := d.Annotations[ocispec.AnnotationRefName]; n != "" && strings.ContainsAny(n, "/:") {
		return []string{n}
	}
	return nil
}

// choose picks the manifest for the platform from a nested index.
func choose(ctx context.Context, d ocispec.Descriptor, platform ocispec.Platform, read ReadDocFunc, depth int) (*ocispec.Descriptor, error) {
	if depth > MaxIndexDepth {
		return nil, fmt.Errorf("indexes nested deeper than %d: %w", MaxIndexDepth, errdefs.ErrInvalidArgument)
	}
	b, err := read(ctx, d)
	if err != nil {
		return nil, err
	}
	idx, err := ParseIndex(d.Digest.String(), b)
	if err != nil {
		return nil, err
	}
	for _, m := range idx.Manifests {
		if IsManifest(m.MediaType) && MatchPlatform(platform, m.Platform) {
			return &m, nil
		}
	}
	for _, m := range idx.Manifests {
		if IsIndex(m.MediaType) && (m.Platform == nil || MatchPlatform(platform, m.Platform)) {
			if found, err := choose(ctx, m, platform, read, depth+1); err != nil || found != nil {
				return found, err
			}
		}
	}
	return nil, nil
}
