package glance_test

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/glance"
	"github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/image/validate"
	"github.com/berthrun/berth/internal/fixture"
)

// DefaultURL is where scripts/setup-glance.sh (run by make test) starts
// glance-api.
const DefaultURL = "http://127.0.0.1:9292"

// requireGlance returns the real Glance's URL, or skips the test (fails
// it under CI=true) when none answers.
func requireGlance(t *testing.T) string {
	t.Helper()
	u := os.Getenv("BERTH_GLANCE_URL")
	if u == "" {
		u = DefaultURL
	}
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(u + "/versions")
	if err == nil {
		resp.Body.Close()
	}
	fixture.Require(t, err == nil && resp.StatusCode < 500,
		fmt.Sprintf("needs glance-api at %s (scripts/setup-glance.sh starts it; BERTH_GLANCE_URL overrides): %v", u, err))
	return u
}

// busyboxStore is a store holding a busybox image with a gzip layer and
// an uncompressed one, tagged busybox:1.
func busyboxStore(t *testing.T) (*image.Store, *imagetest.Image) {
	t.Helper()
	rootfs := fixture.BusyboxTB(t)
	l, err := imagetest.DirTar(rootfs)
	require.NoError(t, err)
	im := imagetest.NewImage([][]byte{imagetest.Gzip(l), imagetest.Tar(imagetest.File("etc/motd", "pushed\n"))}, "/bin/sh")
	im.Tags = []string{"busybox:1"}
	s, err := image.Open(filepath.Join(t.TempDir(), "store"))
	require.NoError(t, err)
	_, err = s.ImportReader(context.Background(), bytes.NewReader(imagetest.OCI(im)), image.ImportOptions{Tags: image.TagPolicy{Expect: im.Tags}})
	require.NoError(t, err)
	return s, im
}

func TestPushPullRoundTrip(t *testing.T) {
	u := requireGlance(t)
	ctx := context.Background()
	src, _ := busyboxStore(t)
	want, err := src.Get(ctx, "busybox:1")
	require.NoError(t, err)

	id, err := glance.Push(ctx, u, src, "busybox:1", glance.PushOptions{Name: "berth-test-" + t.Name()})
	require.NoError(t, err)
	t.Cleanup(func() { deleteImage(t, u, id) })

	dst, err := image.Open(filepath.Join(t.TempDir(), "pulled"))
	require.NoError(t, err)
	res, err := glance.Pull(ctx, u, id, dst, glance.PullOptions{Import: image.ImportOptions{Tags: image.TagPolicy{Name: "from-glance:1"}}})
	require.NoError(t, err)
	require.Len(t, res.Images, 1)
	assert.Equal(t, want.Digest, res.Images[0].Digest, "the manifest digest survives the trip through Glance")
	got, err := dst.Get(ctx, "from-glance:1")
	require.NoError(t, err)
	assert.Equal(t, want.Digest, got.Digest)
	assert.Equal(t, want.ConfigDigest, got.ConfigDigest)
	assert.Equal(t, []string{"from-glance:1"}, got.Tags, "the archive's busybox:1 is not taken: only the caller's name")
	require.NoError(t, validate.Store(dst.Dir()))

	// Glance recorded what berth pushed.
	gi := getImage(t, u, id)
	assert.Equal(t, "docker", gi.ContainerFormat)
	assert.Equal(t, "raw", gi.DiskFormat)
	assert.Equal(t, want.Digest.String(), gi.Properties[glance.PropertyDigest])
}

func TestPullUnknownImage(t *testing.T) {
	u := requireGlance(t)
	s, err := image.Open(t.TempDir())
	require.NoError(t, err)
	_, err = glance.Pull(context.Background(), u, "00000000-0000-0000-0000-000000000000", s, glance.PullOptions{})
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
}

func TestPushUnknownRef(t *testing.T) {
	s, err := image.Open(t.TempDir())
	require.NoError(t, err)
	_, err = glance.Push(context.Background(), "http://127.0.0.1:1", s, "nope:1", glance.PushOptions{})
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
}

func TestUnreachableGlance(t *testing.T) {
	s, err := image.Open(t.TempDir())
	require.NoError(t, err)
	_, err = glance.Pull(context.Background(), "http://127.0.0.1:1", "x", s, glance.PullOptions{})
	assert.True(t, errdefs.IsUnavailable(err), "%v", err)
	_, err = glance.Pull(context.Background(), "ftp://x", "x", s, glance.PullOptions{})
	assert.True(t, errdefs.IsInvalidArgument(err), "%v", err)
}

// fakeGlance serves one image whose recorded hash is of want while its
// data is body: what a corrupted Glance store, or a man in the middle,
// looks like.
func fakeGlance(t *testing.T, body, want []byte) string {
	sum := sha512.Sum512(want)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/file"):
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(body)
		case strings.HasPrefix(r.URL.Path, "/v2/images/"):
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"id":"img","status":"active","container_format":"docker","disk_format":"raw","size":%d,"os_hash_algo":"sha512","os_hash_value":%q,"checksum":"x"}`,
				len(want), hex.EncodeToString(sum[:]))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestPullRefusesHashMismatch(t *testing.T) {
	im := imagetest.NewImage([][]byte{imagetest.Tar(imagetest.File("a", "a"))})
	good := imagetest.DockerSave(im)
	other := imagetest.NewImage([][]byte{imagetest.Tar(imagetest.File("b", "b"))})
	bad := imagetest.DockerSave(other)
	s, err := image.Open(filepath.Join(t.TempDir(), "s"))
	require.NoError(t, err)
	before := validate.Snapshot(t, s.Dir())

	_, err = glance.Pull(context.Background(), fakeGlance(t, bad, good), "img", s, glance.PullOptions{})
	require.Error(t, err)
	assert.True(t, errdefs.IsDataLoss(err), "%v", err)
	assert.Equal(t, before, validate.Snapshot(t, s.Dir()), "nothing committed")

	res, err := glance.Pull(context.Background(), fakeGlance(t, good, good), "img", s, glance.PullOptions{})
	require.NoError(t, err, "the same fake with matching data imports")
	assert.Equal(t, im.ConfigDigest(), res.Images[0].Config)
}

func getImage(t *testing.T, u, id string) *images.Image {
	t.Helper()
	c := &gophercloud.ServiceClient{ProviderClient: &gophercloud.ProviderClient{}, Endpoint: u + "/", ResourceBase: u + "/v2/"}
	gi, err := images.Get(context.Background(), c, id).Extract()
	require.NoError(t, err)
	return gi
}

func deleteImage(t *testing.T, u, id string) {
	if err := glance.Delete(context.Background(), u, id, glance.Options{}); err != nil {
		t.Errorf("delete Glance image %s: %v", id, err)
	}
}

// Delete removes what Push made; a second delete, or one of an image
// Glance never had, is not-found.
func TestDelete(t *testing.T) {
	u := requireGlance(t)
	ctx := context.Background()
	store, _ := busyboxStore(t)
	id, err := glance.Push(ctx, u, store, "busybox:1", glance.PushOptions{})
	require.NoError(t, err)
	require.NoError(t, glance.Delete(ctx, u, id, glance.Options{}))
	err = glance.Delete(ctx, u, id, glance.Options{})
	require.Truef(t, errdefs.IsNotFound(err), "second delete: %v", err)
	require.Contains(t, err.Error(), id, "the error names the image")
	err = glance.Delete(ctx, u, "00000000-0000-4000-8000-000000000000", glance.Options{})
	require.Truef(t, errdefs.IsNotFound(err), "unknown image: %v", err)
}
