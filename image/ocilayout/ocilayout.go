package ocilayout

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The layout's fixed files.
const (
	LayoutFile = ocispec.ImageLayoutFile
	IndexFile  = "index.json"
)

// Docker's media types that mean the same as OCI's.
const (
	DockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	DockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	DockerConfig       = "application/vnd.docker.container.image.v1+json"
)

// IsIndex reports whether mt is an image index (or docker manifest list).
func IsIndex(mt string) bool { return mt == ocispec.MediaTypeImageIndex || mt == DockerManifestList }

// IsManifest reports whether mt is an image manifest.
func IsManifest(mt string) bool { return mt == ocispec.MediaTypeImageManifest || mt == DockerManifest }

func invalid(what, format string, a ...any) error {
	return fmt.Errorf("%s: %s: %w", what, fmt.Sprintf(format, a...), errdefs.ErrInvalidArgument)
}

// ParseLayout checks the oci-layout file.
func ParseLayout(b []byte) error {
	var l ocispec.ImageLayout
	if err := json.Unmarshal(b, &l); err != nil {
		return invalid(LayoutFile, "%v", err)
	}
	if l.Version != ocispec.ImageLayoutVersion {
		return invalid(LayoutFile, "version %q is not %q", l.Version, ocispec.ImageLayoutVersion)
	}
	return nil
}

// ParseIndex parses an image index (index.json or a nested one).
func ParseIndex(what string, b []byte) (*ocispec.Index, error) {
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, invalid(what, "%v", err)
	}
	if idx.SchemaVersion != 2 {
		return nil, invalid(what, "schema version %d is not 2", idx.SchemaVersion)
	}
	for i, d := range idx.Manifests {
		if err := CheckDescriptor(d); err != nil {
			return nil, invalid(what, "manifest %d: %v", i, err)
		}
	}
	return &idx, nil
}

// ParseManifest parses an image manifest.
func ParseManifest(what string, b []byte) (*ocispec.Manifest, error) {
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, invalid(what, "%v", err)
	}
	if m.SchemaVersion != 2 {
		return nil, invalid(what, "schema version %d is not 2", m.SchemaVersion)
	}
	if err := CheckDescriptor(m.Config); err != nil {
		return nil, invalid(what, "config: %v", err)
	}
	for i, d := range m.Layers {
		if err := CheckDescriptor(d); err != nil {
			return nil, invalid(what, "layer %d: %v", i, err)
		}
	}
	return &m, nil
}

// CheckDescriptor checks a descriptor's digest and size.
func CheckDescriptor(d ocispec.Descriptor) error {
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("digest %q: %v", d.Digest, err)
	}
	if d.Size < 0 {
		return fmt.Errorf("negative size %d", d.Size)
	}
	return nil
}

// BlobPath is where a layout keeps the blob d.
func BlobPath(d digest.Digest) string {
	return "blobs/" + d.Algorithm().String() + "/" + d.Encoded()
}

// PathDigest returns the digest a blob path names, if p is one.
func PathDigest(p string) (digest.Digest, bool) {
	rest, ok := strings.CutPrefix(p, "blobs/")
	if !ok {
		return "", false
	}
	alg, enc, ok := strings.Cut(rest, "/")
	if !ok {
		return "", false
	}
	d := digest.NewDigestFromEncoded(digest.Algorithm(alg), enc)
	if d.Validate() != nil {
		return "", false
	}
	return d, true
}

// HostPlatform is the platform this process runs on.
func HostPlatform() ocispec.Platform {
	return ocispec.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
}

// MatchPlatform reports whether an image for got runs on want. A variant
// is compared only when both name one.
func MatchPlatform(want ocispec.Platform, got *ocispec.Platform) bool {
	if got == nil {
		return false
	}
	if got.OS != want.OS || got.Architecture != want.Architecture {
		return false
	}
	return want.Variant == "" || got.Variant == "" || want.Variant == got.Variant
}
