package ocilayout_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/image/ocilayout"
)

func TestWalkIndex(t *testing.T) {
	amd := ocispec.Platform{OS: "linux", Architecture: "amd64"}
	arm := ocispec.Platform{OS: "linux", Architecture: "arm64"}
	man := func(s string, p *ocispec.Platform) ocispec.Descriptor {
		return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString(s), Size: 1, Platform: p}
	}
	nested := ocispec.Index{Manifests: []ocispec.Descriptor{man("arm", &arm), man("amd", &amd)}}
	nested.SchemaVersion = 2
	nb, _ := json.Marshal(nested)
	nd := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(nb), Size: int64(len(nb)),
		Annotations: map[string]string{"io.containerd.image.name": "example.com/a:1"}}
	idx := &ocispec.Index{Manifests: []ocispec.Descriptor{
		man("plain", nil), man("other", &arm), nd,
		{MediaType: "application/vnd.example.artifact", Digest: digest.FromString("x"), Size: 1},
	}}
	docs := map[digest.Digest][]byte{nd.Digest: nb}
	read := func(_ context.Context, d ocispec.Descriptor) ([]byte, error) { return docs[d.Digest], nil }
	var got []string
	err := ocilayout.WalkIndex(context.Background(), idx, amd, read, func(m ocispec.Descriptor, names []string) error {
		got = append(got, m.Digest.String()+" "+strings.Join(names, ","))
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, []string{digest.FromString("plain").String() + " ", digest.FromString("amd").String() + " example.com/a:1"}, got)

	// An index that lists itself nests without end: refused.
	self := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromString("self"), Size: 1}
	loop := ocispec.Index{Manifests: []ocispec.Descriptor{self}}
	loop.SchemaVersion = 2
	docs[self.Digest], _ = json.Marshal(loop)
	err = ocilayout.WalkIndex(context.Background(), &loop, amd, read, func(ocispec.Descriptor, []string) error { return nil })
	assert.True(t, errdefs.IsInvalidArgument(err), "%v", err)
}

func TestReadIndex(t *testing.T) {
	_, err := ocilayout.ReadIndex([]byte(`{"imageLayoutVersion":"2.0.0"}`), []byte(`{"schemaVersion":2}`))
	assert.True(t, errdefs.IsInvalidArgument(err), "%v", err)
	idx, err := ocilayout.ReadIndex([]byte(`{"imageLayoutVersion":"1.0.0"}`), []byte(`{"schemaVersion":2,"manifests":[]}`))
	require.NoError(t, err)
	assert.Empty(t, idx.Manifests)
}

func TestWriter(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	w := ocilayout.NewWriter(tw, time.Unix(0, 0))
	require.NoError(t, w.WriteLayout())
	blob := []byte("content")
	d := digest.FromBytes(blob)
	require.NoError(t, w.WriteBlob(d, int64(len(blob)), bytes.NewReader(blob)))
	m := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: d, Size: int64(len(blob))}
	require.NoError(t, w.WriteIndex(m, []string{"example.com/a:1"}))
	require.NoError(t, tw.Close())

	files := map[string][]byte{}
	tr := tar.NewReader(&buf)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		names = append(names, h.Name)
		files[h.Name], _ = io.ReadAll(tr)
	}
	assert.Equal(t, []string{ocilayout.LayoutFile, "blobs/", "blobs/sha256/", ocilayout.BlobPath(d), ocilayout.IndexFile}, names)
	idx, err := ocilayout.ReadIndex(files[ocilayout.LayoutFile], files[ocilayout.IndexFile])
	require.NoError(t, err)
	require.Len(t, idx.Manifests, 1)
	assert.Equal(t, []string{"example.com/a:1"}, ocilayout.DescriptorNames(idx.Manifests[0]))
	assert.Equal(t, "1", idx.Manifests[0].Annotations[ocispec.AnnotationRefName])
	assert.Equal(t, blob, files[ocilayout.BlobPath(d)])
}
