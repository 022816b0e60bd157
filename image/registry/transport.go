package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
)

// policy is the transport every request of the client goes through, token
// requests and redirects included: it refuses plain HTTP where the policy
// does not allow it (and any other scheme), checks where a redirect
// leads before the library follows it, caps the responses that are not
// blobs as they stream, and retries within the request's context.
type policy struct {
	c    *Client
	next http.RoundTripper
	// maxManifest bounds a response that is not a blob: a manifest or
	// an index (a hostile registry would have the library read 100
	// MiB), a ping, a token; 0 is no bound of ours.
	maxManifest int64
	// retry retries failed requests here, where the wait ends with the
	// request's context (the library's own retries sleep through it).
	retry bool
}

// maxRedirects bounds a request's redirects, as net/http's default does
// (the library's redirect check drops that bound).
const maxRedirects = 10

// retryWaits are the waits between tries, as the library's: three tries.
var retryWaits = []time.Duration{time.Second, 3 * time.Second}

// retryStatus are the statuses tried again, as the library's.
var retryStatus = map[int]bool{
	http.StatusRequestTimeout: true, http.StatusTooManyRequests: true, http.StatusInternalServerError: true,
	http.StatusBadGateway: true, http.StatusServiceUnavailable: true, http.StatusGatewayTimeout: true, 499: true, 522: true,
}

// maxErrorBody bounds an error response's body (the library reads 64 KiB
// of it) when maxManifest is smaller.
const maxErrorBody = 1 << 20

type blobKey struct{}

// blobContext marks the requests of a blob's download: their bodies are
// the blob, which the store bounds by its descriptor.
func blobContext(ctx context.Context) context.Context { return context.WithValue(ctx, blobKey{}, true) }

func (p *policy) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := p.allowed(req.URL); err != nil {
		return nil, err
	}
	resp, err := p.send(req)
	if err != nil {
		return nil, err
	}
	if err := p.checkRedirect(req, resp); err != nil {
		resp.Body.Close()
		return nil, err
	}
	if p.maxManifest <= 0 || req.Context().Value(blobKey{}) != nil {
		return resp, nil
	}
	limit := p.maxManifest
	if resp.StatusCode >= 300 {
		limit = max(limit, maxErrorBody)
	} else if resp.ContentLength > limit {
		resp.Body.Close()
		return nil, fmt.Errorf("registry %s: response of %d bytes to %s exceeds the limit of %d: %w", req.URL.Host, resp.ContentLength, req.URL.Path, limit, errdefs.ErrResourceExhausted)
	}
	resp.Body = &cappedBody{ReadCloser: resp.Body, max: limit, host: req.URL.Host}
	return resp, nil
}

// allowed refuses a URL the client may not reach: anything but HTTPS, or
// plain HTTP to a loopback or insecure registry.
func (p *policy) allowed(u *url.URL) error {
	switch {
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && p.c.plainHTTP(u.Host):
		return nil
	case u.Scheme == "http":
		return fmt.Errorf("registry %s: plain http is refused (not a loopback or insecure registry): %w", u.Host, errdefs.ErrPermissionDenied)
	}
	return fmt.Errorf("registry %s: %q: scheme %q is refused: %w", u.Host, u.Redacted(), u.Scheme, errdefs.ErrPermissionDenied)
}

// checkRedirect refuses a redirect the client would not follow: past
// maxRedirects, to a URL not allowed, or from one host to another that
// is on the loopback or a private network.
func (p *policy) checkRedirect(req *http.Request, resp *http.Response) error {
	switch resp.StatusCode {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
	default:
		return nil
	}
	loc, err := resp.Location()
	if err != nil {
		return nil // not followed
	}
	first, hops := req, 0
	for first.Response != nil && first.Response.Request != nil {
		first = first.Response.Request
		hops++
	}
	if hops >= maxRedirects {
		return fmt.Errorf("registry %s: more than %d redirects: %w", first.URL.Host, maxRedirects, errdefs.ErrUnavailable)
	}
	if err := p.allowed(loc); err != nil {
		return fmt.Errorf("redirect from %s: %w", req.URL.Redacted(), err)
	}
	if h := loc.Hostname(); !strings.EqualFold(h, first.URL.Hostname()) && (isLoopback(h) || isPrivate(h)) {
		return fmt.Errorf("redirect from %s to %s: a private or loopback address is refused: %w", req.URL.Redacted(), loc.Host, errdefs.ErrPermissionDenied)
	}
	return nil
}

// isPrivate tells an IP literal on a private network, link-local or
// unspecified.
func isPrivate(host string) bool {
	host, _, _ = strings.Cut(strings.Trim(host, "[]"), "%")
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	a = a.Unmap()
	return a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsUnspecified()
}

// send makes the request, trying it again (when p.retry) as the library
// would, but no longer than its context.
func (p *policy) send(req *http.Request) (*http.Response, error) {
	for try := 0; ; try++ {
		resp, err := p.next.RoundTrip(req)
		if !p.retry || try == len(retryWaits) || !retryable(req, resp, err) {
			return resp, err
		}
		if resp != nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
			resp.Body.Close()
		}
		wait := time.NewTimer(retryWaits[try] + rand.N(retryWaits[try]/10))
		select {
		case <-req.Context().Done():
			wait.Stop()
			return nil, req.Context().Err()
		case <-wait.C:
		}
		if req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			req = req.Clone(req.Context())
			req.Body = body
		}
	}
}

// retryable tells a failure worth another try: a status or a network
// error the library would try again, for a request that can be sent
// again.
func retryable(req *http.Request, resp *http.Response, err error) bool {
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return false
	}
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return false
		}
		var t interface{ Temporary() bool }
		return (errors.As(err, &t) && t.Temporary()) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
			errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)
	}
	return retryStatus[resp.StatusCode]
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
		return 0, fmt.Errorf("registry %s: response exceeds the limit of %d bytes: %w", b.host, b.max, errdefs.ErrResourceExhausted)
	}
	return n, err
}
