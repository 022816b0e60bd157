package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/internal/fixture"
)

// DefaultRegistry is where scripts/setup-registry.sh (run by make test)
// starts Debian's docker-registry (distribution 2.8).
const DefaultRegistry = "127.0.0.1:5111"

// requireRegistry returns the real registry's HOST:PORT, or skips the test
// (fails it under CI=true) when none answers.
func requireRegistry(t *testing.T) string {
	t.Helper()
	host := os.Getenv("BERTH_REGISTRY")
	if host == "" {
		host = DefaultRegistry
	}
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + host + "/v2/")
	if err == nil {
		resp.Body.Close()
	}
	fixture.Require(t, err == nil && resp.StatusCode == http.StatusOK,
		fmt.Sprintf("needs a registry at %s (scripts/setup-registry.sh starts it; BERTH_REGISTRY overrides): %v", host, err))
	return host
}

func requireSkopeo(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("skopeo")
	fixture.Require(t, err == nil, "needs skopeo (scripts/setup-registry.sh installs it)")
	return p
}

// repo is a repository name of its own for each test run: the registry
// outlives the tests.
func repo(host, what string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return host + "/berth-test/" + what + "-" + hex.EncodeToString(b)
}

// busyboxImage is the busybox fixture as an image: a gzip layer and an
// uncompressed one.
func busyboxImage(t *testing.T) *imagetest.Image {
	t.Helper()
	l, err := imagetest.DirTar(fixture.BusyboxTB(t))
	require.NoError(t, err)
	return imagetest.NewImage([][]byte{imagetest.Gzip(l), imagetest.Tar(imagetest.File("etc/motd", "from the registry\n"))}, "/bin/sh")
}

// importTagged imports im into s as tag.
func importTagged(t *testing.T, s *image.Store, im *imagetest.Image, tag string) digest.Digest {
	t.Helper()
	im.Tags = []string{tag}
	res, err := s.ImportReader(context.Background(), bytes.NewReader(imagetest.OCI(im)), image.ImportOptions{Tags: image.TagPolicy{Expect: im.Tags}})
	require.NoError(t, err)
	return res.Images[0].Digest
}

// countingTransport counts the requests it carries, by method and path.
type countingTransport struct {
	mu   sync.Mutex
	reqs []string
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.reqs = append(c.reqs, r.Method+" "+r.URL.Path)
	c.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

func (c *countingTransport) count(method, part string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.reqs {
		if strings.HasPrefix(r, method+" ") && strings.Contains(r, part) {
			n++
		}
	}
	return n
}

// berth push, then skopeo reads the same digest; berth pull into a fresh
// store gives the same image; a second push uploads no blob again.
func TestRealRegistryPushPull(t *testing.T) {
	host := requireRegistry(t)
	skopeo := requireSkopeo(t)
	ctx := context.Background()
	src := newStore(t)
	want := importTagged(t, src, busyboxImage(t), "busybox:1")
	ref := repo(host, "push") + ":1"
	ct := &countingTransport{}
	c := newClient(t, Options{Transport: ct})

	got, err := c.Push(ctx, src, "busybox:1", ref)
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.Positive(t, ct.count("PUT", "/blobs/uploads/")+ct.count("POST", "/blobs/uploads/"))

	out, err := exec.Command(skopeo, "inspect", "--tls-verify=false", "--format", "{{.Digest}}", "docker://"+ref).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Equal(t, want.String(), strings.TrimSpace(string(out)))

	// Pushed again under another tag: the registry has every blob.
	ct.reqs = nil
	_, err = c.Push(ctx, src, "busybox:1", strings.TrimSuffix(ref, ":1")+":2")
	require.NoError(t, err)
	require.Zero(t, ct.count("POST", "/blobs/uploads/"), "%v", ct.reqs)
	require.Zero(t, ct.count("PUT", "/blobs/uploads/"), "%v", ct.reqs)

	dst := newStore(t)
	res, err := c.Pull(ctx, dst, ref, image.ImportOptions{})
	require.NoError(t, err)
	require.Equal(t, want, res.Images[0].Digest)
	im, err := dst.Get(ctx, ref)
	require.NoError(t, err)
	require.Equal(t, want, im.Digest)
	_, err = dst.Unpack(ctx, ref, filepath.Join(t.TempDir(), "rootfs"), image.UnpackOptions{})
	require.NoError(t, err)
}

// skopeo pushes an image built from the busybox fixture; berth pulls it
// with the same digest skopeo reports.
func TestRealRegistrySkopeoPushBerthPull(t *testing.T) {
	host := requireRegistry(t)
	skopeo := requireSkopeo(t)
	ctx := context.Background()
	layout := filepath.Join(t.TempDir(), "layout")
	im := busyboxImage(t)
	require.NoError(t, imagetest.WriteDir(layout, imagetest.OCIEntries(im)...))
	ref := repo(host, "skopeo") + ":1"
	out, err := exec.Command(skopeo, "copy", "--dest-tls-verify=false", "oci:"+layout, "docker://"+ref).CombinedOutput()
	require.NoError(t, err, "%s", out)
	out, err = exec.Command(skopeo, "inspect", "--tls-verify=false", "--format", "{{.Digest}}", "docker://"+ref).CombinedOutput()
	require.NoError(t, err, "%s", out)
	want := digest.Digest(strings.TrimSpace(string(out)))

	s := newStore(t)
	res, err := newClient(t, Options{}).Pull(ctx, s, ref, image.ImportOptions{})
	require.NoError(t, err)
	require.Equal(t, want, res.Images[0].Digest)
	dir := filepath.Join(t.TempDir(), "rootfs")
	_, err = s.Unpack(ctx, ref, dir, image.UnpackOptions{})
	require.NoError(t, err)
	motd, err := os.ReadFile(filepath.Join(dir, "etc/motd"))
	require.NoError(t, err)
	require.Equal(t, "from the registry\n", string(motd))
}

// A pull of an image whose layers the store holds downloads only its
// manifest and config.
func TestRealRegistryPullSkipsStoredLayers(t *testing.T) {
	host := requireRegistry(t)
	ctx := context.Background()
	src := newStore(t)
	base := busyboxImage(t)
	importTagged(t, src, base, "base:1")
	// The same layers under another config: another image.
	other := imagetest.NewImage(base.Layers, "/bin/echo", "other")
	importTagged(t, src, other, "other:1")
	r := repo(host, "skip")
	c := newClient(t, Options{})
	_, err := c.Push(ctx, src, "base:1", r+":base")
	require.NoError(t, err)
	_, err = c.Push(ctx, src, "other:1", r+":other")
	require.NoError(t, err)

	dst := newStore(t)
	ct := &countingTransport{}
	c = newClient(t, Options{Transport: ct})
	_, err = c.Pull(ctx, dst, r+":base", image.ImportOptions{})
	require.NoError(t, err)
	require.Equal(t, 3, ct.count("GET", "/blobs/"), "config and two layers: %v", ct.reqs)
	ct.reqs = nil
	_, err = c.Pull(ctx, dst, r+":other", image.ImportOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, ct.count("GET", "/blobs/"), "the config only: %v", ct.reqs)
	require.Equal(t, 1, ct.count("GET", "/manifests/"), "%v", ct.reqs)
}
