package docker

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/client"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/runtime/driver"
)

// fakeImages holds the fake daemon's images: ID -> tags. A load adds
// loadID with loadTags (what the archive would claim).
type fakeImages struct {
	images   map[string][]string
	loadID   string
	loadTags []string
	loaded   [][]byte
	// vanish is how many loads are undone at once, as a concurrent
	// release of the image would.
	vanish int
}

func (f *fakeEngine) imgs() *fakeImages {
	if f.images == nil {
		f.images = &fakeImages{images: map[string][]string{}}
	}
	return f.images
}

func (f *fakeEngine) ImageInspect(ctx context.Context, id string, _ ...client.ImageInspectOption) (client.ImageInspectResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.imgs().images[id]; !ok {
		return client.ImageInspectResult{}, errdefs.ErrNotFound
	}
	return client.ImageInspectResult{InspectResponse: image.InspectResponse{ID: id}}, nil
}

func (f *fakeEngine) ImageLoad(ctx context.Context, input io.Reader, _ ...client.ImageLoadOption) (client.ImageLoadResult, error) {
	b, err := io.ReadAll(input)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	im := f.imgs()
	im.loaded = append(im.loaded, b)
	for id, tags := range im.images { // a load re-points the archive's tags
		var kept []string
		for _, t := range tags {
			if !contains(im.loadTags, t) {
				kept = append(kept, t)
			}
		}
		im.images[id] = kept
	}
	im.images[im.loadID] = append(im.images[im.loadID], im.loadTags...)
	if im.vanish > 0 {
		im.vanish--
		delete(im.images, im.loadID)
	}
	return io.NopCloser(bytes.NewReader([]byte(`{"stream":"Loaded image ID: ` + im.loadID + `"}` + "\n"))), nil
}

func (f *fakeEngine) ImageList(ctx context.Context, _ client.ImageListOptions) (client.ImageListResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var res client.ImageListResult
	for id, tags := range f.imgs().images {
		res.Items = append(res.Items, image.Summary{ID: id, RepoTags: append([]string(nil), tags...)})
	}
	return res, nil
}

func (f *fakeEngine) ImageTag(ctx context.Context, o client.ImageTagOptions) (client.ImageTagResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	im := f.imgs()
	for id, tags := range im.images {
		var kept []string
		for _, t := range tags {
			if t != o.Target {
				kept = append(kept, t)
			}
		}
		im.images[id] = kept
	}
	im.images[o.Source] = append(im.images[o.Source], o.Target)
	return client.ImageTagResult{}, nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func source(id string) *driver.ImageSource {
	return &driver.ImageSource{
		Digest: "sha256:manifest", ConfigDigest: id,
		WriteArchive: func(ctx context.Context, w io.Writer) error { _, err := w.Write([]byte("archive")); return err },
	}
}

func TestEnsureImageLoadsOnce(t *testing.T) {
	f := newFake()
	r := &Runtime{eng: f}
	f.imgs().loadID = "sha256:cfg"
	id, err := r.ensureImage(context.Background(), source("sha256:cfg"))
	require.NoError(t, err)
	require.Equal(t, "sha256:cfg", id)
	require.Len(t, f.imgs().loaded, 1)
	require.Equal(t, "archive", string(f.imgs().loaded[0]), "the archive berth wrote")
	_, err = r.ensureImage(context.Background(), source("sha256:cfg"))
	require.NoError(t, err)
	require.Len(t, f.imgs().loaded, 1, "an image the daemon has is not loaded again")
}

// An image released by another container's delete between its load and
// the check is loaded again; one that never stays is an error.
func TestEnsureImageLoadsAgainWhenReleased(t *testing.T) {
	f := newFake()
	r := &Runtime{eng: f}
	f.imgs().loadID, f.imgs().vanish = "sha256:cfg", 1
	id, err := r.ensureImage(context.Background(), source("sha256:cfg"))
	require.NoError(t, err)
	require.Equal(t, "sha256:cfg", id)
	require.Len(t, f.imgs().loaded, 2)

	f = newFake()
	r = &Runtime{eng: f}
	f.imgs().loadID, f.imgs().vanish = "sha256:cfg", 100
	_, err = r.ensureImage(context.Background(), source("sha256:cfg"))
	require.Error(t, err)
	require.Len(t, f.imgs().loaded, 3)
}

// Should a load ever move a tag, it is put back and the create refused.
func TestEnsureImageRefusesMovedTags(t *testing.T) {
	f := newFake()
	r := &Runtime{eng: f}
	f.imgs().images["sha256:ubuntu"] = []string{"ubuntu:latest"}
	f.imgs().loadID, f.imgs().loadTags = "sha256:evil", []string{"ubuntu:latest"}
	_, err := r.ensureImage(context.Background(), source("sha256:evil"))
	require.Truef(t, errdefs.IsDataLoss(err), "%v", err)
	require.Contains(t, err.Error(), "ubuntu:latest")
	require.Equal(t, []string{"ubuntu:latest"}, f.imgs().images["sha256:ubuntu"], "the tag is put back")
}

func (f *fakeEngine) ImageRemove(ctx context.Context, id string, _ client.ImageRemoveOptions) (client.ImageRemoveResult, error) {
	f.record("ImageRemove " + id)
	return client.ImageRemoveResult{}, errdefs.ErrNotImplemented
}
