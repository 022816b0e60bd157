package registry

import (
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/imagetest"
)

func newStore(t *testing.T) *image.Store {
	s, err := image.Open(t.TempDir())
	require.NoError(t, err)
	return s
}

func newClient(t *testing.T, opts Options) *Client {
	c, err := New(opts)
	require.NoError(t, err)
	return c
}

func smallImage(files ...string) *imagetest.Image {
	var es []imagetest.Entry
	for _, f := range files {
		es = append(es, imagetest.File(f, f+"\n"))
	}
	return imagetest.NewImage([][]byte{imagetest.Gzip(imagetest.Tar(es...))}, "/bin/sh")
}

func TestPullFromFake(t *testing.T) {
	f := newFakeRegistry(t)
	im := smallImage("etc/a")
	d := f.putImage("tenant/app", "1", im)
	s := newStore(t)
	c := newClient(t, Options{})
	res, err := c.Pull(context.Background(), s, f.host()+"/tenant/app:1", image.ImportOptions{})
	require.NoError(t, err)
	require.Len(t, res.Images, 1)
	require.Equal(t, d, res.Images[0].Digest)
	got, err := s.Get(context.Background(), f.host()+"/tenant/app:1")
	require.NoError(t, err)
	require.Equal(t, d, got.Digest)
}

// A registry's index may name any tag it likes: the pull creates the one
// it was asked for and no other, and a digest pull creates none.
func TestPullTagsOnlyWhatWasAsked(t *testing.T) {
	f := newFakeRegistry(t)
	im := smallImage("etc/a")
	md := f.putImage("tenant/app", "x", im)
	m := desc(ocispec.MediaTypeImageManifest, im.Manifest())
	m.Platform = &ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}
	m.Annotations = map[string]string{"io.containerd.image.name": "docker.io/library/ubuntu:latest", ocispec.AnnotationRefName: "latest"}
	idx := index(m)
	idx = append(idx[:len(idx)-1], []byte(`,"annotations":{"io.containerd.image.name":"busybox:latest","org.opencontainers.image.ref.name":"busybox:latest"}}`)...)
	f.putManifest("tenant/app", ocispec.MediaTypeImageIndex, idx, "1")
	s, ubuntu := seeded(t)
	c := newClient(t, Options{})
	ctx := context.Background()
	res, err := c.Pull(ctx, s, f.host()+"/tenant/app:1", image.ImportOptions{})
	require.NoError(t, err)
	require.Equal(t, md, res.Images[0].Digest)
	var made []string
	for _, tc := range res.Tags {
		if tc.Action != image.TagSkipped {
			made = append(made, tc.Ref)
		}
	}
	require.Equal(t, []string{f.host() + "/tenant/app:1"}, made)
	got, err := s.Get(ctx, "ubuntu:latest")
	require.NoError(t, err)
	require.Equal(t, ubuntu, got.Digest)
	_, err = s.Get(ctx, "busybox:latest")
	require.True(t, errdefs.IsNotFound(err), "%v", err)

	// By digest: no tag at all.
	s2 := newStore(t)
	res, err = c.Pull(ctx, s2, f.host()+"/tenant/app@"+digest.FromBytes(idx).String(), image.ImportOptions{})
	require.NoError(t, err)
	require.Equal(t, md, res.Images[0].Digest)
	list, err := s2.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Empty(t, list[0].Tags)

	// A pull of the tag again, after the registry moved it, moves it.
	im2 := smallImage("etc/b")
	md2 := f.putImage("tenant/app", "1", im2)
	_, err = c.Pull(ctx, s, f.host()+"/tenant/app:1", image.ImportOptions{})
	require.NoError(t, err)
	got, err = s.Get(ctx, f.host()+"/tenant/app:1")
	require.NoError(t, err)
	require.Equal(t, md2, got.Digest)

	// --tag names it otherwise, and does not move a tag that exists.
	_, err = c.Pull(ctx, s, f.host()+"/tenant/app:x", image.ImportOptions{Tags: image.TagPolicy{Name: "ubuntu:latest"}})
	require.True(t, errdefs.IsAlreadyExists(err), "%v", err)
	got, err = s.Get(ctx, "ubuntu:latest")
	require.NoError(t, err)
	require.Equal(t, ubuntu, got.Digest)
}

func TestPullErrors(t *testing.T) {
	f := newFakeRegistry(t)
	s := newStore(t)
	c := newClient(t, Options{})
	ctx := context.Background()
	_, err := c.Pull(ctx, s, f.host()+"/tenant/none:1", image.ImportOptions{})
	require.True(t, errdefs.IsNotFound(err), "%v", err)
	_, err = c.Pull(ctx, s, "Not A Reference", image.ImportOptions{})
	require.True(t, errdefs.IsInvalidArgument(err), "%v", err)
	_, err = c.Pull(ctx, s, f.host()+"/tenant/none:1", image.ImportOptions{Tags: image.TagPolicy{Prefix: "x/"}})
	require.True(t, errdefs.IsInvalidArgument(err), "%v", err)

	// A registry that wants credentials we do not have.
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		registryError(w, http.StatusUnauthorized, "UNAUTHORIZED")
		return true
	})
	_, err = c.Pull(ctx, s, f.host()+"/tenant/app:1", image.ImportOptions{})
	require.True(t, errdefs.IsPermissionDenied(err), "%v", err)

	// Nobody listens.
	_, err = c.Pull(ctx, s, "127.0.0.1:1/tenant/app:1", image.ImportOptions{})
	require.True(t, errdefs.IsUnavailable(err), "%v", err)
	list, err := s.List(ctx)
	require.NoError(t, err)
	require.Empty(t, list)
}

// A registry that stalls mid-blob is bounded by the context, and leaves
// nothing.
func TestPullStalledRegistry(t *testing.T) {
	f := newFakeRegistry(t)
	im := smallImage("etc/a")
	f.putImage("tenant/app", "1", im)
	ld := digest.FromBytes(im.Layers[0])
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, ld.String()) || r.Method != http.MethodGet {
			return false
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(im.Layers[0])))
		w.Write(im.Layers[0][:10])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return true
	})
	s, _ := seeded(t)
	before := storeFiles(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := newClient(t, Options{}).Pull(ctx, s, f.host()+"/tenant/app:1", image.ImportOptions{})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, before, storeFiles(t, s))
}

// Credentials come from the Docker config DOCKER_CONFIG names.
func TestPullWithDockerConfigCredentials(t *testing.T) {
	f := newFakeRegistry(t)
	f.putImage("tenant/app", "1", smallImage("etc/a"))
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if u, p, ok := r.BasicAuth(); ok && u == "tenant" && p == "s3cret" {
			return false
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		registryError(w, http.StatusUnauthorized, "UNAUTHORIZED")
		return true
	})
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte("tenant:s3cret"))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"auths":{"`+f.host()+`":{"auth":"`+auth+`"}}}`), 0o600))
	t.Setenv("DOCKER_CONFIG", dir)
	_, err := newClient(t, Options{}).Pull(context.Background(), newStore(t), f.host()+"/tenant/app:1", image.ImportOptions{})
	require.NoError(t, err)
}

// Mirrors are tried first; a mirror without the image falls through to
// the next, then to the registry.
func TestPullMirrors(t *testing.T) {
	empty := newFakeRegistry(t)
	mirror := newFakeRegistry(t)
	md := mirror.putImage("library/busybox", "1", smallImage("etc/a"))
	// docker.io itself is never reached: the transport refuses it.
	var upstream []string
	base := http.DefaultTransport.(*http.Transport).Clone()
	tr := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if !isLoopback(r.URL.Host) {
			upstream = append(upstream, r.URL.String())
			return nil, fmt.Errorf("no network in tests")
		}
		return base.RoundTrip(r)
	})
	c := newClient(t, Options{Transport: tr, Mirrors: map[string][]string{"docker.io": {empty.URL, mirror.URL}}})
	s := newStore(t)
	res, err := c.Pull(context.Background(), s, "busybox:1", image.ImportOptions{})
	require.NoError(t, err)
	require.Equal(t, md, res.Images[0].Digest)
	require.Empty(t, upstream)
	require.NotEmpty(t, empty.requests("/manifests/"))
	im, err := s.Get(context.Background(), "docker.io/library/busybox:1")
	require.NoError(t, err)
	require.Equal(t, md, im.Digest)

	// Nowhere: the registry's own error, after the mirrors'.
	_, err = c.Pull(context.Background(), s, "busybox:2", image.ImportOptions{})
	require.Error(t, err)
	require.NotEmpty(t, upstream)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Plain HTTP goes only to loopback and to the insecure hosts, redirects
// and token realms included.
func TestPlainHTTPPolicy(t *testing.T) {
	var sent []string
	tr := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		sent = append(sent, r.URL.String())
		if r.URL.Scheme == "https" && r.URL.Host == "registry.example" {
			// Sends the client to plain HTTP elsewhere.
			return &http.Response{StatusCode: http.StatusTemporaryRedirect, Header: http.Header{"Location": {"http://10.1.2.3/v2/"}},
				Body: http.NoBody, Request: r}, nil
		}
		return nil, fmt.Errorf("unreachable in tests")
	})
	c := newClient(t, Options{Transport: tr})
	_, err := c.Pull(context.Background(), newStore(t), "registry.example/tenant/app:1", image.ImportOptions{})
	require.Error(t, err)
	for _, u := range sent {
		require.False(t, strings.HasPrefix(u, "http://"), "sent %s", u)
	}
	// An RFC 1918 host is not loopback: HTTPS only (the library alone
	// would fall back to HTTP there).
	sent = nil
	_, err = c.Pull(context.Background(), newStore(t), "10.0.0.7:5000/tenant/app:1", image.ImportOptions{})
	require.Error(t, err)
	require.NotEmpty(t, sent)
	for _, u := range sent {
		require.True(t, strings.HasPrefix(u, "https://"), "sent %s", u)
	}
	// Named insecure: HTTP is allowed.
	sent = nil
	c = newClient(t, Options{Transport: tr, Insecure: []string{"10.0.0.7:5000"}})
	_, err = c.Pull(context.Background(), newStore(t), "10.0.0.7:5000/tenant/app:1", image.ImportOptions{})
	require.Error(t, err)
	require.Contains(t, strings.Join(sent, " "), "http://10.0.0.7:5000/v2/")

	for _, bad := range []Options{{Insecure: []string{"http://x"}}, {Mirrors: map[string][]string{"docker.io": {"ftp://m"}}},
		{Mirrors: map[string][]string{"docker.io": {"https://m/path"}}}, {Mirrors: map[string][]string{"a/b": {"https://m"}}}} {
		_, err := New(bad)
		require.True(t, errdefs.IsInvalidArgument(err), "%+v: %v", bad, err)
	}
	for _, bad := range []string{"a/b=https://m", "docker.io=ftp://m", "=https://m", "docker.io", "x y=http://m"} {
		_, _, err := ParseMirror(bad)
		require.True(t, errdefs.IsInvalidArgument(err), "%q: %v", bad, err)
	}
	host, u, err := ParseMirror("docker.io=http://127.0.0.1:5000")
	require.NoError(t, err)
	require.Equal(t, []string{"docker.io", "http://127.0.0.1:5000"}, []string{host, u})
}

// Concurrent pulls of one image into one store download each blob once;
// a later image sharing a layer downloads only what is new.
func TestPullDownloadsOnce(t *testing.T) {
	f := newFakeRegistry(t)
	shared := imagetest.Gzip(imagetest.Tar(imagetest.File("etc/shared", noise(1<<20))))
	a := imagetest.NewImage([][]byte{shared, imagetest.Tar(imagetest.File("etc/a", "a"))}, "/bin/sh")
	b := imagetest.NewImage([][]byte{shared, imagetest.Tar(imagetest.File("etc/b", "b"))}, "/bin/sh")
	f.putImage("tenant/a", "1", a)
	f.putImage("tenant/b", "1", b)
	slow := digest.FromBytes(shared).String()
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, slow) {
			time.Sleep(200 * time.Millisecond) // all pulls are waiting by now
		}
		return false
	})
	s := newStore(t)
	c := newClient(t, Options{})
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.Pull(context.Background(), s, f.host()+"/tenant/a:1", image.ImportOptions{})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	for _, l := range append(a.Layers, a.Config) {
		require.Len(t, f.requests("GET /v2/tenant/a/blobs/"+digest.FromBytes(l).String()), 1, "blob %s", digest.FromBytes(l))
	}
	n := len(f.requests("/blobs/"))
	_, err := c.Pull(context.Background(), s, f.host()+"/tenant/b:1", image.ImportOptions{})
	require.NoError(t, err)
	got := f.requests("/blobs/")[n:]
	require.ElementsMatch(t, []string{"GET /v2/tenant/b/blobs/" + b.ConfigDigest().String(), "GET /v2/tenant/b/blobs/" + digest.FromBytes(b.Layers[1]).String()}, got)
	ents, err := os.ReadDir(filepath.Join(s.Dir(), "ingest"))
	require.NoError(t, err)
	require.Empty(t, ents, "ingest/ keeps what pulls shared")
}

// noise is n bytes that do not compress.
func noise(n int) string {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return string(b)
}

// A multi-platform index resolves to the host's platform, or to the one
// asked for.
func TestPullMultiPlatform(t *testing.T) {
	f := newFakeRegistry(t)
	var entries []ocispec.Descriptor
	want := map[string]digest.Digest{}
	for _, arch := range []string{"arm64", "amd64", "s390x"} {
		im := smallImage("etc/" + arch)
		d := f.putImage("tenant/multi", arch, im)
		e := desc(ocispec.MediaTypeImageManifest, im.Manifest())
		e.Platform = &ocispec.Platform{OS: "linux", Architecture: arch}
		entries = append(entries, e)
		want[arch] = d
	}
	f.putManifest("tenant/multi", ocispec.MediaTypeImageIndex, index(entries...), "1")
	c := newClient(t, Options{})
	res, err := c.Pull(context.Background(), newStore(t), f.host()+"/tenant/multi:1", image.ImportOptions{})
	if runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64" {
		require.NoError(t, err)
		require.Equal(t, want[runtime.GOARCH], res.Images[0].Digest)
	}
	res, err = c.Pull(context.Background(), newStore(t), f.host()+"/tenant/multi:1",
		image.ImportOptions{Platform: &ocispec.Platform{OS: "linux", Architecture: "s390x"}})
	require.NoError(t, err)
	require.Equal(t, want["s390x"], res.Images[0].Digest)
	// Only the chosen manifest's blobs were fetched.
	require.Empty(t, f.requests("/tenant/multi/blobs/"+digest.FromBytes(smallImage("etc/arm64").Config).String()))
}
