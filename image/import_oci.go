package image

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berthrun/berth/image/layer"
	"github.com/berthrun/berth/image/ocilayout"
)

// index imports the images index.json lists.
func (r *resolver) index(ctx context.Context, idx *ocispec.Index) error {
	read := func(ctx context.Context, d ocispec.Descriptor) ([]byte, error) {
		b, _, err := r.doc(ctx, d)
		return b, err
	}
	return ocilayout.WalkIndex(ctx, idx, r.platform, read, func(m ocispec.Descriptor, names []string) error {
		p, err := r.manifest(ctx, m)
		if err != nil {
			return err
		}
		p.addTags(names)
		return nil
	})
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
		return r.blobFor(ctx, m.Layers[i], false)
	}); err != nil {
		return nil, fmt.Errorf("image %s: %w", d.Digest, err)
	}
	r.seen[d.Digest] = p
	r.order = append(r.order, p)
	return p, nil
}
