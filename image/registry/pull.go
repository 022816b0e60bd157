package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/ocilayout"
)

// Pull imports the image ref names (NAME[:TAG] or NAME@DIGEST) into store,
// from the registry's mirrors first, then the registry. A multi-platform
// index resolves to opts.Platform (default: this host's).
//
// The pull tags the image with ref's tag, moving it if it named another
// image (as docker pull does), and with no tag for a digest; opts.Tags.Name
// names it otherwise. Whatever the registry's documents claim creates no
// tag.
func (c *Client) Pull(ctx context.Context, store *image.Store, ref string, opts image.ImportOptions) (*image.ImportResult, error) {
	r, err := ParseReference(ref)
	if err != nil {
		return nil, err
	}
	if len(opts.Tags.Expect) > 0 || opts.Tags.Prefix != "" {
		return nil, fmt.Errorf("pull %s: a registry's tags are not taken; name the image with Tags.Name: %w", r, errdefs.ErrInvalidArgument)
	}
	if opts.Tags.Name == "" && r.Tag != "" {
		opts.Tags = image.TagPolicy{Name: r.Tag, AllowRetag: true}
	}
	var errs []error
	for _, host := range c.endpoints(r) {
		res, err := c.pullFrom(ctx, store, host, r, opts)
		if err == nil {
			return res, nil
		}
		var resolve *resolveError
		if !errors.As(err, &resolve) || ctx.Err() != nil {
			// The image was found there: what went wrong is the
			// image's, not the host's.
			return nil, fmt.Errorf("pull %s from %s: %w", r, host, err)
		}
		errs = append(errs, fmt.Errorf("%s: %w", host, resolve.err))
	}
	last := errs[len(errs)-1]
	if len(errs) > 1 {
		return nil, fmt.Errorf("pull %s: %w (and from the mirrors: %v)", r, last, errors.Join(errs[:len(errs)-1]...))
	}
	return nil, fmt.Errorf("pull %s: %w", r, last)
}

// resolveError is a host that could not give the image's root manifest:
// the next host is tried.
type resolveError struct{ err error }

func (e *resolveError) Error() string { return e.err.Error() }
func (e *resolveError) Unwrap() error { return e.err }

// endpoints are the hosts to try for r: its mirrors, then its registry.
func (c *Client) endpoints(r Reference) []string {
	var hosts []string
	for _, m := range c.mirrors[canonicalHost(r.ref.Context().RegistryStr())] {
		hosts = append(hosts, m.host)
	}
	return append(hosts, r.ref.Context().RegistryStr())
}

// target is r on host.
func (c *Client) target(host string, r Reference) (name.Reference, error) {
	s := host + "/" + r.ref.Context().RepositoryStr()
	if r.Digest != "" {
		s += "@" + r.Digest.String()
	} else {
		s += ":" + r.ref.Identifier()
	}
	var opts []name.Option
	if c.plainHTTP(host) {
		opts = append(opts, name.Insecure)
	}
	t, err := name.ParseReference(s, opts...)
	if err != nil {
		return nil, fmt.Errorf("reference %q: %v: %w", s, err, errdefs.ErrInvalidArgument)
	}
	return t, nil
}

// remoteOptions are the library's options for one operation.
func (c *Client) remoteOptions(maxManifest int64) []remote.Option {
	return c.options(&policy{c: c, next: c.opts.Transport, maxManifest: maxManifest})
}

// pullOptions are a pull's: the policy, not the library, tries failed
// requests again, so that no retry outlives the pull's context.
func (c *Client) pullOptions(maxManifest int64) []remote.Option {
	return append(c.options(&policy{c: c, next: c.opts.Transport, maxManifest: maxManifest, retry: true}),
		remote.WithRetryBackoff(remote.Backoff{Steps: 1}))
}

func (c *Client) options(p *policy) []remote.Option {
	return []remote.Option{
		remote.WithTransport(p),
		remote.WithAuthFromKeychain(c.opts.Keychain),
		remote.WithUserAgent("berth"),
	}
}

func (c *Client) pullFrom(ctx context.Context, store *image.Store, host string, r Reference, opts image.ImportOptions) (*image.ImportResult, error) {
	t, err := c.target(host, r)
	if err != nil {
		return nil, err
	}
	maxManifest := image.DefaultLimits.MaxJSONBytes
	if opts.Limits.MaxJSONBytes != 0 {
		maxManifest = opts.Limits.MaxJSONBytes
	}
	puller, err := remote.NewPuller(c.pullOptions(maxManifest)...)
	if err != nil {
		return nil, classify(err)
	}
	desc, err := puller.Get(ctx, t)
	if err != nil {
		return nil, &resolveError{classify(err)}
	}
	root := ocispec.Descriptor{MediaType: string(desc.MediaType), Digest: digest.Digest(desc.Digest.String()), Size: desc.Size}
	if r.Digest != "" && root.Digest != r.Digest {
		return nil, fmt.Errorf("the registry gave manifest %s for %s: %w", root.Digest, r.Digest, errdefs.ErrInvalidArgument)
	}
	f := &fetcher{c: c, puller: puller, repo: t.Context()}
	res, err := store.Pull(ctx, image.WithDocuments(f, desc.Manifest), root, opts)
	return res, classify(err)
}

// fetcher is an image.Remote over one repository of a registry.
type fetcher struct {
	c      *Client
	puller *remote.Puller
	repo   name.Repository
}

func (f *fetcher) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	ref := f.repo.Digest(d.Digest.String())
	var rc io.ReadCloser
	if ocilayout.IsIndex(d.MediaType) || ocilayout.IsManifest(d.MediaType) {
		desc, err := f.puller.Get(ctx, ref)
		if err != nil {
			return nil, classify(err)
		}
		rc = io.NopCloser(bytes.NewReader(desc.Manifest))
	} else {
		l, err := f.puller.Layer(blobContext(ctx), ref)
		if err != nil {
			return nil, classify(err)
		}
		if rc, err = l.Compressed(); err != nil {
			return nil, classify(err)
		}
	}
	return f.c.track(rc, d), nil
}

// Origin is the repository, on the host (the registry or a mirror) the
// blobs come from.
func (f *fetcher) Origin() string { return f.repo.Name() }

// track reports a blob's transfer to Options.Progress.
func (c *Client) track(rc io.ReadCloser, d ocispec.Descriptor) io.ReadCloser {
	if c.opts.Progress == nil {
		return rc
	}
	return &progressReader{ReadCloser: rc, fn: c.opts.Progress, p: Progress{Digest: d.Digest, MediaType: d.MediaType, Size: d.Size}}
}

type progressReader struct {
	io.ReadCloser
	fn func(Progress)
	p  Progress
}

func (r *progressReader) Read(b []byte) (int, error) {
	n, err := r.ReadCloser.Read(b)
	r.p.Done += int64(n)
	if err != nil {
		r.p.Failed = err != io.EOF
		r.finish()
	} else if n > 0 {
		r.fn(r.p)
	}
	return n, err
}

func (r *progressReader) finish() {
	if !r.p.Finished {
		r.p.Finished = true
		r.fn(r.p)
	}
}

func (r *progressReader) Close() error {
	// Closed before its end: the reader gave up on it.
	r.p.Failed = r.p.Failed || !r.p.Finished
	r.finish()
	return r.ReadCloser.Close()
}

var _ http.RoundTripper = (*policy)(nil)
