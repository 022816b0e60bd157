package registry

import (
	"context"
	"fmt"
	"io"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berthrun/berth/image"
)

// Push uploads the image src names in store (a tag or a digest) to the
// registry as dst (NAME[:TAG] or NAME@DIGEST; empty: src as a reference).
// Blobs the registry has already are not uploaded again, and the manifest
// goes up byte for byte: its digest in the registry is the stored one,
// which Push returns. Pushes never go to mirrors.
func (c *Client) Push(ctx context.Context, store *image.Store, src, dst string) (digest.Digest, error) {
	if dst == "" {
		dst = src
	}
	r, err := ParseReference(dst)
	if err != nil {
		return "", err
	}
	content, err := store.OpenContent(ctx, src)
	if err != nil {
		return "", err
	}
	defer content.Close()
	if r.Digest != "" && r.Digest != content.Image.Digest {
		return "", fmt.Errorf("push %s: image %q is %s: %w", r, src, content.Image.Digest, errdefs.ErrInvalidArgument)
	}
	t, err := c.target(r.ref.Context().RegistryStr(), r)
	if err != nil {
		return "", err
	}
	img, err := partial.CompressedToImage(&storeImage{c: c, content: content})
	if err != nil {
		return "", fmt.Errorf("push %s: %w", r, classify(err))
	}
	pusher, err := remote.NewPusher(c.remoteOptions(0)...)
	if err != nil {
		return "", classify(err)
	}
	if err := pusher.Push(ctx, t, img); err != nil {
		return "", fmt.Errorf("push %s: %w", r, classify(err))
	}
	return content.Image.Digest, nil
}

// storeImage is a stored image as the library's compressed image.
type storeImage struct {
	c       *Client
	content *image.Content
}

func (s *storeImage) RawConfigFile() ([]byte, error) { return s.content.Config, nil }
func (s *storeImage) RawManifest() ([]byte, error)   { return s.content.Manifest, nil }
func (s *storeImage) MediaType() (types.MediaType, error) {
	return types.MediaType(s.content.MediaType), nil
}

func (s *storeImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	m := s.content.Image.Manifest()
	for _, d := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
		if d.Digest.String() == h.String() {
			return &storeLayer{img: s, desc: d}, nil
		}
	}
	return nil, fmt.Errorf("blob %s is not part of image %s: %w", h, s.content.Image.Digest, errdefs.ErrNotFound)
}

// storeLayer is a stored blob as the library's compressed layer.
type storeLayer struct {
	img  *storeImage
	desc ocispec.Descriptor
}

func (l *storeLayer) Digest() (v1.Hash, error) { return v1.NewHash(l.desc.Digest.String()) }
func (l *storeLayer) Size() (int64, error)     { return l.desc.Size, nil }
func (l *storeLayer) MediaType() (types.MediaType, error) {
	return types.MediaType(l.desc.MediaType), nil
}

func (l *storeLayer) Compressed() (io.ReadCloser, error) {
	rc, err := l.img.content.Blob(l.desc.Digest)
	if err != nil {
		return nil, err
	}
	return l.img.c.track(rc, l.desc), nil
}
