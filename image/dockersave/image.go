package dockersave

import (
	"encoding/json"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berthrun/berth/image/ocilayout"
)

// RepositoriesFile is the legacy tag file of docker-save archives (before
// manifest.json carried RepoTags); it is read as a document and ignored.
const RepositoriesFile = "repositories"

// ConfigDigest reads the digest a legacy docker-save config's archive
// path gives ("HEX.json", HEX its sha256), if p is one.
func ConfigDigest(p string) (digest.Digest, bool) {
	enc, ok := strings.CutSuffix(p, ".json")
	if !ok || strings.Contains(enc, "/") {
		return "", false
	}
	d := digest.NewDigestFromEncoded(digest.SHA256, enc)
	return d, d.Validate() == nil
}

// LayoutConfig returns the digest of the entry's config when its path is
// a blob of an OCI layout (the docker 25 form), whose index.json then
// lists the same image.
func (e ManifestEntry) LayoutConfig() (digest.Digest, bool) {
	return ocilayout.PathDigest(e.Config)
}

// ImageManifest gives the OCI image manifest of a docker-save image, which
// the archive does not hold: the image's config and layers as read
// (uncompressed layers keep their digest; the config's is docker's image
// ID), always the same bytes for the same image.
func ImageManifest(config ocispec.Descriptor, layers []ocispec.Descriptor) ([]byte, digest.Digest, error) {
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: config.Digest, Size: config.Size},
		Layers:    []ocispec.Descriptor{},
	}
	m.SchemaVersion = 2
	for _, l := range layers {
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: l.MediaType, Digest: l.Digest, Size: l.Size})
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, "", err
	}
	return b, digest.FromBytes(b), nil
}

// LayoutManifest gives the manifest.json of the docker 25 form, where the
// archive is also an OCI layout: one image whose config and layers are
// the layout's blobs, tagged tags.
func LayoutManifest(config digest.Digest, layers []digest.Digest, tags []string) ([]byte, error) {
	e := ManifestEntry{Config: ocilayout.BlobPath(config), RepoTags: tags}
	for _, l := range layers {
		e.Layers = append(e.Layers, ocilayout.BlobPath(l))
	}
	return MarshalManifest([]ManifestEntry{e})
}
