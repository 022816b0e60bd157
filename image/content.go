package image

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Content is a stored image opened for a client that uploads it (a
// registry push): its manifest and config as stored, byte for byte, and
// its blobs, which can be read as often as the client needs, each read
// verified. The blobs stay readable until Close even if the image is
// removed meanwhile.
type Content struct {
	Image *Image
	// Manifest is the manifest as stored: its digest is Image.Digest.
	Manifest []byte
	// MediaType is the manifest's media type.
	MediaType string
	// Config is the config document as stored.
	Config []byte

	files map[digest.Digest]*os.File
	sizes map[digest.Digest]int64
}

// OpenContent opens the image ref names (a tag or a digest, as Get takes).
// Errors: not-found for an unknown image, data-loss for a blob that is
// missing or no longer matches its digest.
func (s *Store) OpenContent(ctx context.Context, ref string) (*Content, error) {
	idx, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	d, err := resolveRef(idx, ref)
	if err != nil {
		return nil, err
	}
	c := &Content{files: map[digest.Digest]*os.File{}, sizes: map[digest.Digest]int64{}}
	// Opened under the lock: a concurrent Remove cannot take a blob away
	// half-way, and the open files keep them after.
	err = s.shared(ctx, func() error {
		im, err := s.load(idx, d)
		if err != nil {
			return err
		}
		c.Image = im
		if c.Manifest, err = s.readBlob(d, DefaultLimits.MaxJSONBytes); err != nil {
			return err
		}
		if c.Config, err = s.readBlob(im.ConfigDigest, DefaultLimits.MaxJSONBytes); err != nil {
			return err
		}
		for _, l := range append([]ocispec.Descriptor{im.manifest.Config}, im.manifest.Layers...) {
			if _, ok := c.files[l.Digest]; ok {
				continue
			}
			f, err := s.openBlob(l.Digest)
			if err != nil {
				return err
			}
			c.files[l.Digest], c.sizes[l.Digest] = f, l.Size
		}
		return nil
	})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("image %q: %w", ref, err)
	}
	c.MediaType = c.Image.manifest.MediaType
	if c.MediaType == "" {
		c.MediaType = ocispec.MediaTypeImageManifest
	}
	return c, nil
}

// Blob reads the config or a layer from its start. The reader fails at
// its end (data-loss) unless the bytes match the digest.
func (c *Content) Blob(d digest.Digest) (io.ReadCloser, error) {
	f, ok := c.files[d]
	if !ok {
		return nil, fmt.Errorf("blob %s is not part of image %s: %w", d, c.Image.Digest, errdefs.ErrNotFound)
	}
	v := newVerified(nil, io.NewSectionReader(f, 0, c.sizes[d]+1), d, c.sizes[d])
	return io.NopCloser(v), nil
}

// Close closes the blobs.
func (c *Content) Close() error {
	for _, f := range c.files {
		f.Close()
	}
	return nil
}
