package cri

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/image/registry"
	"github.com/berthrun/berth/internal/fixture"
)

// critestDir is where scripts/setup-critest.sh builds critest and writes
// the mirrors of its test images (BERTH_CRITEST_DIR overrides).
func critestDir() string {
	if d := os.Getenv("BERTH_CRITEST_DIR"); d != "" {
		return d
	}
	return "/var/lib/berth-critest"
}

// loopbackOnly carries requests to loopback registries only: with critest's
// images on the local registry under their upstream names, a spec whose
// image is not there must fail, not reach gcr.io.
type loopbackOnly struct{ next http.RoundTripper }

func (l loopbackOnly) RoundTrip(r *http.Request) (*http.Response, error) {
	h, _, err := net.SplitHostPort(r.URL.Host)
	if err != nil {
		h = r.URL.Host
	}
	if ip := net.ParseIP(h); h != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("the tests reach no registry but loopback ones (asked for %s)", r.URL.Host)
	}
	return l.next.RoundTrip(r)
}

// critest's image specs against berth's image service, offline: the test
// images come from the local registry through berth's mirrors. The spec
// of an image pinned by a digest no offline build can give is skipped.
func TestCritestImages(t *testing.T) {
	dir := critestDir()
	critest := filepath.Join(dir, "bin", "critest")
	mirrorFlags, err := os.ReadFile(filepath.Join(dir, "mirrors"))
	_, serr := os.Stat(critest)
	fixture.Require(t, err == nil && serr == nil, "needs critest and its images (scripts/setup-critest.sh builds them)")

	opts := registry.Options{Mirrors: map[string][]string{}, Transport: loopbackOnly{http.DefaultTransport}}
	for _, f := range strings.Fields(string(mirrorFlags)) {
		if f == "--registry-mirror" {
			continue
		}
		host, u, err := registry.ParseMirror(f)
		require.NoError(t, err)
		opts.Mirrors[host] = append(opts.Mirrors[host], u)
	}
	rc, err := registry.New(opts)
	require.NoError(t, err)
	_, sock := serve(t, rc)

	cmd := exec.CommandContext(context.Background(), critest, "-runtime-endpoint", sock, "-image-endpoint", sock,
		"-ginkgo.focus", `\[k8s.io\] Image Manager`, "-ginkgo.skip", "with digest", "-ginkgo.no-color")
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	summary := ""
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "Ran ") || strings.Contains(line, "Passed |") {
			summary += line + "\n"
		}
	}
	t.Logf("critest:\n%s", summary)
	require.NoError(t, err, "%s", out)
	require.Contains(t, summary, "0 Failed")
}
