package ocilayout_test

import (
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/image/ocilayout"
)

func TestDocuments(t *testing.T) {
	require.NoError(t, ocilayout.ParseLayout([]byte(`{"imageLayoutVersion":"1.0.0"}`)))
	assert.True(t, errdefs.IsInvalidArgument(ocilayout.ParseLayout([]byte(`{"imageLayoutVersion":"2"}`))))
	_, err := ocilayout.ParseIndex("i", []byte(`{"schemaVersion":2,"manifests":[{"digest":"sha256:abc","size":1}]}`))
	assert.True(t, errdefs.IsInvalidArgument(err), "short digest: %v", err)
	_, err = ocilayout.ParseIndex("i", []byte(`{"schemaVersion":1}`))
	assert.True(t, errdefs.IsInvalidArgument(err))
	d := digest.FromString("x")
	_, err = ocilayout.ParseManifest("m", []byte(`{"schemaVersion":2,"config":{"digest":"`+d.String()+`","size":-1}}`))
	assert.True(t, errdefs.IsInvalidArgument(err), "negative size: %v", err)
}

func TestBlobPaths(t *testing.T) {
	d := digest.FromString("x")
	p := ocilayout.BlobPath(d)
	assert.Equal(t, "blobs/sha256/"+d.Encoded(), p)
	got, ok := ocilayout.PathDigest(p)
	assert.True(t, ok)
	assert.Equal(t, d, got)
	for _, bad := range []string{"blobs/sha256/../x", "blobs/sha256/ABC", "blobs/md5/" + d.Encoded(), "x/sha256/" + d.Encoded()} {
		_, ok := ocilayout.PathDigest(bad)
		assert.False(t, ok, bad)
	}
}

func TestMatchPlatform(t *testing.T) {
	want := ocispec.Platform{OS: "linux", Architecture: "arm64"}
	assert.True(t, ocilayout.MatchPlatform(want, &ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}))
	assert.False(t, ocilayout.MatchPlatform(want, &ocispec.Platform{OS: "linux", Architecture: "amd64"}))
	assert.False(t, ocilayout.MatchPlatform(want, nil))
}
