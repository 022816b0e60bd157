package image

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"os"
	"slices"
	"sort"
	"time"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berthrun/berth/image/ocilayout"
	"github.com/berthrun/berth/internal/deepcopy"
	"github.com/berthrun/berth/internal/errclass"
)

// Image is an image in the store.
type Image struct {
	// Digest is the manifest's digest: the image's identity.
	Digest digest.Digest
	// ConfigDigest is the config's digest (docker's image ID).
	ConfigDigest digest.Digest
	// Tags are the tags that name the image, sorted.
	Tags []string
	// Size is the stored size of manifest, config and layers.
	Size int64
	// Imported is when the image came into the store.
	Imported time.Time

	manifest ocispec.Manifest
	config   ocispec.Image
}

// Config is what a container of the image runs: entrypoint, command,
// environment, working directory, user (the caller's own copy, as for
// every method below).
func (i *Image) Config() ocispec.ImageConfig { return deepcopy.Of(i.config.Config) }

// User is the user the image's config names (Config().User, without
// copying the rest of the config).
func (i *Image) User() string { return i.config.Config.User }

// OCIConfig is the image's whole config document.
func (i *Image) OCIConfig() ocispec.Image { return deepcopy.Of(i.config) }

// RepoDigests are NAME@DIGEST references of the image: its manifest
// digest under the repository of each of its tags, sorted.
func (i *Image) RepoDigests() []string {
	var out []string
	for _, t := range i.Tags {
		named, err := reference.ParseNormalizedNamed(t)
		if err != nil {
			continue
		}
		r := reference.FamiliarName(named) + "@" + i.Digest.String()
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	sort.Strings(out)
	return out
}

// Manifest is the image's manifest.
func (i *Image) Manifest() ocispec.Manifest { return deepcopy.Of(i.manifest) }

// Platform is the platform the image was built for.
func (i *Image) Platform() ocispec.Platform { return deepcopy.Of(i.config.Platform) }

// Get returns the image ref names: a tag (NAME[:TAG], normalized as
// NormalizeTag does), a manifest digest or a config digest. An unknown
// image is not-found.
func (s *Store) Get(ctx context.Context, ref string) (*Image, error) {
	idx, err := s.readIndexShared()
	if err != nil {
		return nil, err
	}
	d, err := resolveRef(idx, ref)
	if err != nil {
		return nil, err
	}
	im, err := s.load(idx, d)
	if err != nil {
		// A removal may have taken the image's blobs between the read of
		// the index and of the blobs: if the index no longer has it, it
		// is gone, not damaged.
		if now, rerr := s.readIndexShared(); rerr == nil {
			if _, ok := now.Images[d]; !ok {
				return nil, fmt.Errorf("image %q: removed meanwhile: %w", ref, errdefs.ErrNotFound)
			}
		}
		return nil, fmt.Errorf("image %q: %w", ref, err)
	}
	return im, nil
}

// resolveRef finds the manifest digest ref names in idx.
func resolveRef(idx *index, ref string) (digest.Digest, error) {
	if d, ok := isDigest(ref); ok {
		if _, ok := idx.Images[d]; ok {
			return d, nil
		}
		var found []digest.Digest
		for md, im := range idx.Images {
			if im.Config == d {
				found = append(found, md)
			}
		}
		switch len(found) {
		case 1:
			return found[0], nil
		case 0:
			return "", fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
		}
		return "", fmt.Errorf("image %q: config of %d images, name one by manifest digest: %w", ref, len(found), errdefs.ErrFailedPrecondition)
	}
	if named, err := reference.ParseNormalizedNamed(ref); err == nil {
		if dg, ok := named.(reference.Digested); ok {
			// NAME@DIGEST: the image of that manifest digest, as
			// containerd resolves a pull-by-digest reference.
			if _, ok := idx.Images[dg.Digest()]; ok {
				return dg.Digest(), nil
			}
			return "", fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
		}
	}
	tag, err := NormalizeTag(ref)
	if err != nil {
		return "", err
	}
	d, ok := idx.Tags[tag]
	if !ok {
		return "", fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
	}
	return d, nil
}

// load reads an image's manifest and config from their (verified) blobs.
func (s *Store) load(idx *index, d digest.Digest) (*Image, error) {
	rec, ok := idx.Images[d]
	if !ok {
		return nil, errdefs.ErrNotFound
	}
	im := &Image{Digest: d, ConfigDigest: rec.Config, Size: rec.Size, Imported: rec.Imported}
	for t, td := range idx.Tags {
		if td == d {
			im.Tags = append(im.Tags, t)
		}
	}
	sort.Strings(im.Tags)
	if e, ok := s.docs.get(d, rec.Config); ok {
		im.manifest, im.config = e.manifest, e.image
		return im, nil
	}
	mb, err := s.readBlob(d, DefaultLimits.MaxJSONBytes)
	if err != nil {
		return nil, err
	}
	m, err := ocilayout.ParseManifest(d.String(), mb)
	if err != nil {
		return nil, fmt.Errorf("stored manifest: %v: %w", err, errdefs.ErrDataLoss)
	}
	im.manifest = *m
	cb, err := s.readBlob(rec.Config, DefaultLimits.MaxJSONBytes)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(cb, &im.config); err != nil {
		return nil, fmt.Errorf("stored config: %v: %w", err, errdefs.ErrDataLoss)
	}
	s.docs.put(d, &knownDoc{config: rec.Config, manifest: im.manifest, image: im.config, size: len(mb) + len(cb)})
	return im, nil
}

// readBlob reads a small blob and verifies it.
func (s *Store) readBlob(d digest.Digest, max int64) ([]byte, error) {
	f, err := s.openBlob(d)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, errclass.OS(err)
	}
	if int64(len(b)) > max || digest.FromBytes(b) != d {
		return nil, fmt.Errorf("blob %s: content no longer matches its digest: %w", d, errdefs.ErrDataLoss)
	}
	return b, nil
}

// openBlob opens a blob of the store; a missing one is data-loss (the
// index names it).
func (s *Store) openBlob(d digest.Digest) (*os.File, error) {
	f, err := os.Open(s.blobPath(d))
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("blob %s is missing: %w", d, errdefs.ErrDataLoss)
		}
		return nil, errclass.OS(err)
	}
	return f, nil
}

// verifiedReader reads a blob and fails at its end (data-loss) unless
// what it read has the blob's digest and size.
type verifiedReader struct {
	f    *os.File
	r    io.Reader // f, or a section of it
	d    digest.Digest
	size int64
	h    hash.Hash
	n    int64
}

func (s *Store) openVerified(d digest.Digest, size int64) (*verifiedReader, error) {
	f, err := s.openBlob(d)
	if err != nil {
		return nil, err
	}
	// Reading the blob once, front to back: tell the kernel.
	adviseSequential(f)
	return newVerified(f, f, d, size), nil
}

// newVerified verifies what r (reading f, which Close closes) gives.
func newVerified(f *os.File, r io.Reader, d digest.Digest, size int64) *verifiedReader {
	h := sha256.New()
	if d.Algorithm() != digest.SHA256 {
		h = d.Algorithm().Hash()
	}
	return &verifiedReader{f: f, r: r, d: d, size: size, h: h}
}

func (v *verifiedReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if err == io.EOF {
		if v.n != v.size || digest.NewDigest(v.d.Algorithm(), v.h) != v.d {
			return n, fmt.Errorf("blob %s: content no longer matches its digest: %w", v.d, errdefs.ErrDataLoss)
		}
	}
	return n, err
}

func (v *verifiedReader) Close() error { return v.f.Close() }

// List returns every image of the store, tagged ones first by tag, then
// untagged ones by digest.
func (s *Store) List(ctx context.Context) ([]*Image, error) {
	idx, err := s.readIndexShared()
	if err != nil {
		return nil, err
	}
	var out []*Image
	for d := range idx.Images {
		im, err := s.load(idx, d)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", d, err)
		}
		out = append(out, im)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if (len(a.Tags) > 0) != (len(b.Tags) > 0) {
			return len(a.Tags) > 0
		}
		if len(a.Tags) > 0 && a.Tags[0] != b.Tags[0] {
			return a.Tags[0] < b.Tags[0]
		}
		return a.Digest < b.Digest
	})
	return out, nil
}

// RemoveResult says what Remove did.
type RemoveResult struct {
	// Untagged are the tags removed.
	Untagged []string
	// Deleted is the image removed from the store, if it went.
	Deleted digest.Digest
}

// Remove removes ref. A tag goes alone, and its image with it when no
// other tag names it; a digest removes the image and all its tags. Blobs
// no image uses any more are deleted, and so is the image's unpacked root
// filesystem unless a holder still uses it (see Rootfs).
func (s *Store) Remove(ctx context.Context, ref string) (*RemoveResult, error) {
	res := &RemoveResult{}
	err := s.locked(ctx, func() error {
		idx, err := s.readIndex()
		if err != nil {
			return err
		}
		d, err := resolveRef(idx, ref)
		if err != nil {
			return err
		}
		if _, isDigest := isDigest(ref); isDigest {
			for t, td := range idx.Tags {
				if td == d {
					delete(idx.Tags, t)
					res.Untagged = append(res.Untagged, t)
				}
			}
		} else {
			t, _ := NormalizeTag(ref)
			delete(idx.Tags, t)
			res.Untagged = append(res.Untagged, t)
		}
		sort.Strings(res.Untagged)
		still := false
		for _, td := range idx.Tags {
			still = still || td == d
		}
		if !still {
			delete(idx.Images, d)
			res.Deleted = d
		}
		if err := s.writeIndex(idx); err != nil {
			return err
		}
		return s.collect(idx)
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}
