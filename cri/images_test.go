package cri

import (
	"bytes"
	"context"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/image/registry"
)

// criFixture is a berth-cri serving a fresh store on a socket, a registry on
// loopback holding one image (pushed as HOST/tenant/app:1, also reachable
// as mirror.invalid/tenant/app:1 through a mirror), and clients.
type criFixture struct {
	host    string
	want    digest.Digest // the manifest digest
	id      string        // the config digest
	images  cri.ImageServiceClient
	runtime cri.RuntimeServiceClient
	store   *image.Store
}

func newFixture(t *testing.T) *criFixture {
	t.Helper()
	reg := httptest.NewServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	ctx := context.Background()

	src, err := image.Open(filepath.Join(t.TempDir(), "src"))
	require.NoError(t, err)
	im := imagetest.NewImage([][]byte{imagetest.Gzip(imagetest.Tar(imagetest.File("etc/motd", "hi\n")))}, "/bin/sh")
	im.Tags = []string{"app:1"}
	res, err := src.ImportReader(ctx, bytes.NewReader(imagetest.OCI(im)), image.ImportOptions{Tags: image.TagPolicy{Expect: im.Tags}})
	require.NoError(t, err)
	rc, err := registry.New(registry.Options{Mirrors: map[string][]string{"mirror.invalid": {reg.URL}}})
	require.NoError(t, err)
	_, err = rc.Push(ctx, src, "app:1", host+"/tenant/app:1")
	require.NoError(t, err)

	store, sock := serve(t, rc)
	conn, err := grpc.NewClient(sock, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", strings.TrimPrefix(a, "unix://"))
		}))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return &criFixture{host: host, want: res.Images[0].Digest, id: res.Images[0].Config.String(),
		images: cri.NewImageServiceClient(conn), runtime: cri.NewRuntimeServiceClient(conn), store: store}
}

// serve serves a fresh store, pulling with rc, on a socket of its own
// until the test ends; it returns the store and the socket's address.
func serve(t *testing.T, rc *registry.Client) (*image.Store, string) {
	t.Helper()
	store, err := image.Open(filepath.Join(t.TempDir(), "store"))
	require.NoError(t, err)
	sock := "unix://" + filepath.Join(t.TempDir(), "cri.sock")
	l, err := Listen(sock)
	require.NoError(t, err)
	srv := NewServer(NewImageService(store, rc), nil)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return store, sock
}

func spec(ref string) *cri.ImageSpec { return &cri.ImageSpec{Image: ref} }

func TestImageService(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	ref := f.host + "/tenant/app:1"

	pulled, err := f.images.PullImage(ctx, &cri.PullImageRequest{Image: spec(ref)})
	require.NoError(t, err)
	require.Equal(t, f.id, pulled.ImageRef, "the image ref is the image ID, the config digest")

	list, err := f.images.ListImages(ctx, &cri.ListImagesRequest{})
	require.NoError(t, err)
	require.Len(t, list.Images, 1)
	got := list.Images[0]
	require.Equal(t, f.id, got.Id)
	require.Equal(t, []string{ref}, got.RepoTags)
	require.Equal(t, []string{f.host + "/tenant/app@" + f.want.String()}, got.RepoDigests)
	require.Positive(t, got.Size)

	// Found by tag, by ID (with and without its algorithm), by
	// NAME@DIGEST; absent is a nil image, not an error.
	for _, r := range []string{ref, f.id, strings.TrimPrefix(f.id, "sha256:"), f.host + "/tenant/app@" + f.want.String()} {
		st, err := f.images.ImageStatus(ctx, &cri.ImageStatusRequest{Image: spec(r)})
		require.NoError(t, err, r)
		require.NotNil(t, st.Image, r)
		require.Equal(t, f.id, st.Image.Id, r)
	}
	st, err := f.images.ImageStatus(ctx, &cri.ImageStatusRequest{Image: spec("nosuch:1")})
	require.NoError(t, err)
	require.Nil(t, st.Image)
	list, err = f.images.ListImages(ctx, &cri.ListImagesRequest{Filter: &cri.ImageFilter{Image: spec(ref)}})
	require.NoError(t, err)
	require.Len(t, list.Images, 1)

	fsinfo, err := f.images.ImageFsInfo(ctx, &cri.ImageFsInfoRequest{})
	require.NoError(t, err)
	require.Len(t, fsinfo.ImageFilesystems, 1)
	require.Positive(t, fsinfo.ImageFilesystems[0].UsedBytes.Value)
	require.Positive(t, fsinfo.ImageFilesystems[0].InodesUsed.Value)

	// Through a mirror: another name for the same image.
	_, err = f.images.PullImage(ctx, &cri.PullImageRequest{Image: spec("mirror.invalid/tenant/app:1")})
	require.NoError(t, err)
	st, err = f.images.ImageStatus(ctx, &cri.ImageStatusRequest{Image: spec(f.id)})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{ref, "mirror.invalid/tenant/app:1"}, st.Image.RepoTags)

	// Removed with all its names, and removing it again succeeds.
	for range 2 {
		_, err = f.images.RemoveImage(ctx, &cri.RemoveImageRequest{Image: spec(ref)})
		require.NoError(t, err)
	}
	list, err = f.images.ListImages(ctx, &cri.ListImagesRequest{})
	require.NoError(t, err)
	require.Empty(t, list.Images)
}

// Bad input gets the gRPC code of its class and changes nothing.
func TestImageServiceErrors(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, c := range []struct {
		ref  string
		code codes.Code
	}{
		{f.host + "/tenant/none:1", codes.NotFound},
		{"Not A Reference", codes.InvalidArgument},
		{"", codes.InvalidArgument},
		{"127.0.0.1:1/tenant/app:1", codes.Unavailable},
	} {
		_, err := f.images.PullImage(ctx, &cri.PullImageRequest{Image: spec(c.ref)})
		require.Equal(t, c.code, status.Code(err), "%q: %v", c.ref, err)
	}
	list, err := f.store.List(ctx)
	require.NoError(t, err)
	require.Empty(t, list)
}

// A pull's credentials go to the registry its reference names, never to a
// mirror tried first.
func TestPullCredentialsStayWithTheirRegistry(t *testing.T) {
	r, err := registry.ParseReference("busybox:1")
	require.NoError(t, err)
	creds := authn.FromConfig(authn.AuthConfig{Username: "u", Password: "p"})
	k := staticKeychain{registry: r.Registry(), a: creds}
	for host, want := range map[string]authn.Authenticator{"index.docker.io": creds, "mirror.invalid": authn.Anonymous, "127.0.0.1:5111": authn.Anonymous} {
		reg, err := name.NewRegistry(host)
		require.NoError(t, err)
		got, err := k.Resolve(reg)
		require.NoError(t, err)
		require.Equal(t, want, got, host)
	}
}
