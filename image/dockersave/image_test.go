package dockersave_test

import (
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/image/dockersave"
	"github.com/berthrun/berth/image/ocilayout"
)

func TestConfigDigest(t *testing.T) {
	d := digest.FromString("config")
	got, ok := dockersave.ConfigDigest(d.Encoded() + ".json")
	assert.True(t, ok)
	assert.Equal(t, d, got)
	for _, p := range []string{"abc.json", "x/" + d.Encoded() + ".json", d.Encoded()} {
		_, ok := dockersave.ConfigDigest(p)
		assert.False(t, ok, p)
	}
}

func TestImageManifest(t *testing.T) {
	cfg := ocispec.Descriptor{Digest: digest.FromString("c"), Size: 1}
	l := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromString("l"), Size: 2}
	b1, d1, err := dockersave.ImageManifest(cfg, []ocispec.Descriptor{l})
	require.NoError(t, err)
	b2, d2, _ := dockersave.ImageManifest(cfg, []ocispec.Descriptor{l})
	assert.Equal(t, b1, b2, "the same image gives the same bytes")
	assert.Equal(t, digest.FromBytes(b1), d1)
	assert.Equal(t, d1, d2)
	m, err := ocilayout.ParseManifest("m", b1)
	require.NoError(t, err)
	assert.Equal(t, ocispec.MediaTypeImageConfig, m.Config.MediaType)
	assert.Equal(t, []ocispec.Descriptor{l}, m.Layers)
}

func TestLayoutManifest(t *testing.T) {
	cfg, l := digest.FromString("c"), digest.FromString("l")
	b, err := dockersave.LayoutManifest(cfg, []digest.Digest{l}, nil)
	require.NoError(t, err)
	es, err := dockersave.ParseManifest(b)
	require.NoError(t, err)
	require.Len(t, es, 1)
	assert.Equal(t, []string{}, es[0].RepoTags)
	assert.Equal(t, []string{ocilayout.BlobPath(l)}, es[0].Layers)
	got, ok := es[0].LayoutConfig()
	assert.True(t, ok)
	assert.Equal(t, cfg, got)
}
