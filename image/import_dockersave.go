package image

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berthrun/berth/image/dockersave"
)

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
		cfg := ocispec.Descriptor{Digest: cfgSt.info.Digest, Size: cfgSt.info.Size}
		for j, l := range p.layers {
			descs[j] = ocispec.Descriptor{MediaType: l.info.Compression.MediaType(), Digest: l.info.Digest, Size: l.info.Size}
		}
		if p.manifest, p.digest, err = dockersave.ImageManifest(cfg, descs); err != nil {
			return err
		}
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
		d, ok := e.LayoutConfig()
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
