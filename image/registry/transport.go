package registry

import (
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/containerd/errdefs"
)

// policy is the transport every request of the client goes through, token
// requests and redirects included: it refuses plain HTTP where the policy
// does not allow it and caps manifests as they stream.
type policy struct {
	c    *Client
	next http.RoundTripper
	// maxManifest bounds a manifest or index response (a hostile registry
	// would have the library read 100 MiB); 0 is no bound of ours.
	maxManifest int64
}

func (p *policy) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" && !p.c.plainHTTP(req.URL.Host) {
		return nil, fmt.Errorf("registry %s: plain %s is refused (not a loopback or insecure registry): %w", req.URL.Host, req.URL.Scheme, errdefs.ErrPermissionDenied)
	}
	resp, err := p.next.RoundTrip(req)
	if err != nil || p.maxManifest <= 0 || !strings.Contains(req.URL.Path, "/manifests/") {
		return resp, err
	}
	if resp.ContentLength > p.maxManifest {
		resp.Body.Close()
		return nil, fmt.Errorf("registry %s: manifest of %d bytes exceeds the limit of %d: %w", req.URL.Host, resp.ContentLength, p.maxManifest, errdefs.ErrResourceExhausted)
	}
	resp.Body = &cappedBody{ReadCloser: resp.Body, max: p.maxManifest, host: req.URL.Host}
	return resp, nil
}

// cappedBody fails a response body that goes past max bytes.
type cappedBody struct {
	io.ReadCloser
	max  int64
	n    int64
	host string
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if left := b.max - b.n + 1; int64(len(p)) > left {
		p = p[:left]
	}
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	if b.n > b.max {
		return 0, fmt.Errorf("registry %s: manifest exceeds the limit of %d bytes: %w", b.host, b.max, errdefs.ErrResourceExhausted)
	}
	return n, err
}
