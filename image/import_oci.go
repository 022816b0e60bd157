package image

import (
	"context"
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berthrun/berth/image/layer"
	"github.com/berthrun/berth/image/ocilayout"
)

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
