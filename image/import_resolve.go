package image

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berthrun/berth/image/dockersave"
	"github.com/berthrun/berth/image/ocilayout"
)

// pending is an image resolved from the archive, not yet committed.
type pending struct {
	digest     digest.Digest
	manifest   []byte
	manifestSt *staged // nil when berth wrote the manifest (docker-save)
	config     *staged
	layers     []*staged
	tags       []string
	badTags    []string
	// tree is the image's tree the import put together (see buildTrees).
	tree string
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
		idx, err := ocilayout.ReadIndex(layout, idxDoc)
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

// doc reads and verifies the blob a descriptor names, as a JSON document.
func (r *resolver) doc(ctx context.Context, d ocispec.Descriptor) ([]byte, *staged, error) {
	st, err := r.blobFor(ctx, d, true)
	if err != nil {
		return nil, nil, err
	}
	b, err := r.in.readDoc(st)
	return b, st, err
}

// blobFor returns the staged blob of descriptor d, checking its digest and
// size. doc tells a JSON document (a manifest, an index, a config) from a
// layer: what the blob is for, whatever media type d claims.
func (r *resolver) blobFor(ctx context.Context, d ocispec.Descriptor, doc bool) (*staged, error) {
	if err := ocilayout.CheckDescriptor(d); err != nil {
		return nil, fmt.Errorf("descriptor: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	var st *staged
	var err error
	if ds, ok := r.src.(descSource); ok {
		st, err = ds.blobDesc(ctx, d, doc)
	} else {
		st, err = r.src.blob(ctx, ocilayout.BlobPath(d.Digest))
	}
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
