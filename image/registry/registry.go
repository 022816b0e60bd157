package registry

import (
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
)

// Options configure a Client.
type Options struct {
	// Insecure lists registry hosts (HOST or HOST:PORT) that may be
	// reached over plain HTTP, as dockerd's --insecure-registry.
	// Loopback registries always may.
	Insecure []string
	// Mirrors maps a registry host ("docker.io", "registry.k8s.io") to
	// mirror URLs ("https://mirror.example", "http://127.0.0.1:5000"),
	// tried in order before the registry itself. A mirror named with
	// http:// may be reached over plain HTTP.
	Mirrors map[string][]string
	// Keychain gives credentials; nil is authn.DefaultKeychain (the
	// Docker config).
	Keychain authn.Keychain
	// Transport carries the requests; nil is a clone of
	// http.DefaultTransport. The client wraps it with its own policy.
	Transport http.RoundTripper
	// Progress, when set, is told how each blob's transfer goes. It is
	// called from the transferring goroutines, often: it must be quick.
	Progress func(Progress)
}

// Progress is one step of one blob's transfer.
type Progress struct {
	Digest    digest.Digest
	MediaType string
	// Size is the blob's size as its descriptor declares it.
	Size int64
	// Done is how many bytes went through so far.
	Done int64
	// Finished is set once, when the blob is through or failed.
	Finished bool
	// Failed says the transfer ended before the blob was through: an
	// error, or the blob refused.
	Failed bool
}

// Client pulls and pushes images. It is safe for concurrent use.
type Client struct {
	opts     Options
	insecure map[string]bool
	mirrors  map[string][]mirror
}

type mirror struct {
	host   string
	scheme string
}

// New returns a client. Errors: invalid-argument for a malformed insecure
// host or mirror.
func New(opts Options) (*Client, error) {
	c := &Client{opts: opts, insecure: map[string]bool{}, mirrors: map[string][]mirror{}}
	for _, h := range opts.Insecure {
		if err := ParseHost(h); err != nil {
			return nil, fmt.Errorf("insecure registry: %w", err)
		}
		c.insecure[canonicalHost(h)] = true
	}
	// Sorted: two spellings of one host (docker.io, index.docker.io)
	// give their mirrors in the same order every time.
	for _, host := range slices.Sorted(maps.Keys(opts.Mirrors)) {
		if err := ParseHost(host); err != nil {
			return nil, fmt.Errorf("registry mirror: %w", err)
		}
		for _, raw := range opts.Mirrors[host] {
			m, err := parseMirror(raw)
			if err != nil {
				return nil, fmt.Errorf("registry mirror for %q: %w", host, err)
			}
			if m.scheme == "http" {
				c.insecure[m.host] = true
			}
			c.mirrors[canonicalHost(host)] = append(c.mirrors[canonicalHost(host)], m)
		}
	}
	if c.opts.Keychain == nil {
		c.opts.Keychain = authn.DefaultKeychain
	}
	if c.opts.Transport == nil {
		c.opts.Transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	return c, nil
}

func parseMirror(raw string) (mirror, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return mirror{}, fmt.Errorf("%q is not http[s]://HOST[:PORT]: %w", raw, errdefs.ErrInvalidArgument)
	}
	if _, err := name.NewRegistry(u.Host); err != nil {
		return mirror{}, fmt.Errorf("%q: %v: %w", raw, err, errdefs.ErrInvalidArgument)
	}
	return mirror{host: canonicalHost(u.Host), scheme: u.Scheme}, nil
}

// ParseHost checks a registry host as Options take it: HOST or HOST:PORT.
// Errors: invalid-argument.
func ParseHost(h string) error {
	if _, err := name.NewRegistry(h, name.StrictValidation); err != nil || h == "" || strings.ContainsAny(h, "/ @") {
		return fmt.Errorf("registry %q: not HOST[:PORT]: %w", h, errdefs.ErrInvalidArgument)
	}
	return nil
}

// ParseMirror parses a --registry-mirror HOST=URL flag into the host and
// the URL, checking both.
func ParseMirror(v string) (host, mirrorURL string, err error) {
	host, mirrorURL, ok := strings.Cut(v, "=")
	if !ok || host == "" || mirrorURL == "" {
		return "", "", fmt.Errorf("registry mirror %q: not HOST=URL: %w", v, errdefs.ErrInvalidArgument)
	}
	if err := ParseHost(host); err != nil {
		return "", "", fmt.Errorf("registry mirror %q: %w", v, err)
	}
	if _, err := parseMirror(mirrorURL); err != nil {
		return "", "", fmt.Errorf("registry mirror %q: %w", v, err)
	}
	return host, mirrorURL, nil
}

// canonicalHost is a host as the client compares it: lower case, Docker
// Hub's aliases as one.
func canonicalHost(h string) string {
	h = strings.ToLower(h)
	switch h {
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return name.DefaultRegistry
	}
	return h
}

// Reference is a parsed image reference: Docker Hub shorthand normalized
// as Docker does ("busybox" is docker.io/library/busybox:latest).
type Reference struct {
	ref name.Reference
	// Tag is the normalized tag the store records ("busybox:latest"),
	// empty for a digest reference.
	Tag string
	// Digest is the digest a digest reference names.
	Digest digest.Digest
}

// String is the reference in full.
func (r Reference) String() string { return r.ref.Name() }

// Registry is the host of the registry the reference names, as the
// keychain is asked for it ("index.docker.io" for Docker Hub).
func (r Reference) Registry() string { return r.ref.Context().RegistryStr() }

// ParseReference parses NAME[:TAG] or NAME@DIGEST. Errors:
// invalid-argument.
func ParseReference(s string) (Reference, error) {
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return Reference{}, fmt.Errorf("reference %q: %v: %w", s, err, errdefs.ErrInvalidArgument)
	}
	named = reference.TagNameOnly(named)
	var r Reference
	if d, ok := named.(reference.Digested); ok {
		// NAME:TAG@DIGEST: the digest decides, as Docker does.
		r.Digest = d.Digest()
		named = reference.TrimNamed(named)
		s = named.String() + "@" + r.Digest.String()
	} else {
		s = named.String()
		r.Tag = reference.FamiliarString(named)
	}
	if r.ref, err = name.ParseReference(s, name.StrictValidation); err != nil {
		return Reference{}, fmt.Errorf("reference %q: %v: %w", s, err, errdefs.ErrInvalidArgument)
	}
	return r, nil
}

// isLoopback tells a host (HOST or HOST:PORT) on this machine's loopback.
func isLoopback(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.Trim(h, "[]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// plainHTTP tells whether host may be reached over plain HTTP.
func (c *Client) plainHTTP(host string) bool {
	return isLoopback(host) || c.insecure[canonicalHost(host)]
}

// registryFor is the name.Registry to reach host with: insecure (HTTP
// allowed) when the policy allows it, so go-containerregistry falls back
// to it; the transport enforces the policy whatever the library decides.
func (c *Client) registryFor(host string) (name.Registry, error) {
	var opts []name.Option
	if c.plainHTTP(host) {
		opts = append(opts, name.Insecure)
	}
	return name.NewRegistry(host, opts...)
}

// WithKeychain returns a client like c that takes its credentials from k
// (a request's own, as a CRI pull carries them).
func (c *Client) WithKeychain(k authn.Keychain) *Client {
	cc := *c
	cc.opts.Keychain = k
	return &cc
}
