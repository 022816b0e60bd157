package image

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berthrun/berth/image/ocilayout"
)

// A Remote serves an image's blobs by descriptor: a registry, say
// (package registry). Nothing it serves is trusted: the store checks every
// byte against the descriptor it asked for.
type Remote interface {
	// Fetch opens the blob d names: a manifest, an index, a config or a
	// layer.
	Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error)
	// Origin names where the blobs come from (a registry's host and
	// repository). A pull waits for a concurrent pull's download of a
	// blob only when both have the same origin: a registry that
	// trickles a blob holds up only the pulls that named it, not another
	// tenant's pull of the same blob from elsewhere.
	Origin() string
}

// MaxRemoteDocuments bounds the manifests, indexes and configs one pull
// fetches: an index that names indexes without end stops there.
const MaxRemoteDocuments = 64

// Pull imports the image root names (an image manifest, or an index that
// resolves to opts.Platform) from remote, through the same path as Import:
// every blob's digest and size and every layer's diff ID verified while it
// streams to disk, opts.Limits, tag confinement, and one atomic commit; on
// any refusal the store is as it was.
//
// Blobs the store holds already are not fetched again: each is checked
// against the new image by what the store learnt of that file when it
// placed it or last read it (its digest, diff ID and size; see
// knownLayers), or read locally when it knows nothing of that file yet.
// Concurrent pulls of the
// same blob from the same origin (Remote.Origin), in this process or
// another, fetch it once: the others wait for it and share the verified
// file.
//
// A pull creates only the tags opts.Tags names (usually TagPolicy.Name):
// whatever a manifest or index claims is not taken. opts.Verify is not
// for pulls.
//
// Errors: as Import; a blob larger than its descriptor says, or not
// matching its digest, is invalid-argument.
func (s *Store) Pull(ctx context.Context, remote Remote, root ocispec.Descriptor, opts ImportOptions) (*ImportResult, error) {
	if err := opts.Tags.check(); err != nil {
		return nil, err
	}
	if opts.Verify != nil {
		return nil, fmt.Errorf("Verify is for archives read as a stream: %w", errdefs.ErrInvalidArgument)
	}
	if err := ocilayout.CheckDescriptor(root); err != nil {
		return nil, fmt.Errorf("image %s: %v: %w", root.Digest, err, errdefs.ErrInvalidArgument)
	}
	if !ocilayout.IsManifest(root.MediaType) && !ocilayout.IsIndex(root.MediaType) {
		return nil, fmt.Errorf("image %s: media type %q is neither an image manifest nor an index: %w", root.Digest, root.MediaType, errdefs.ErrInvalidArgument)
	}
	lim := opts.Limits.resolved()
	in, err := s.newIngest(lim, !opts.NoRootfs)
	if err != nil {
		return nil, err
	}
	defer in.close()
	idx, err := ocilayout.MarshalIndex(ocispec.Descriptor{MediaType: root.MediaType, Digest: root.Digest, Size: root.Size}, nil)
	if err != nil {
		return nil, err
	}
	src := &remoteSource{in: in, remote: remote, index: idx, staged: map[digest.Digest]*staged{},
		count: &countReader{max: lim.MaxArchiveBytes, progress: opts.Progress}}
	res, err := s.finish(ctx, in, src, opts, 0)
	if err != nil {
		if ocilayout.IsIndex(root.MediaType) {
			// A manifest's errors name it already.
			err = fmt.Errorf("index %s: %w", root.Digest, err)
		}
		return nil, err
	}
	src.count.report(true)
	res.Read = src.count.n.Load()
	return res, nil
}

// remoteSource is a pulled image, seen as an OCI layout whose index.json
// names the root and whose blobs come from the remote.
type remoteSource struct {
	in     *ingest
	remote Remote
	index  []byte
	staged map[digest.Digest]*staged
	count  *countReader
	docs   int
}

var layoutDoc = []byte(`{"imageLayoutVersion":"1.0.0"}`)

func (r *remoteSource) doc(_ context.Context, p string) ([]byte, bool, error) {
	switch p {
	case ocilayout.LayoutFile:
		return layoutDoc, true, nil
	case ocilayout.IndexFile:
		return r.index, true, nil
	}
	return nil, false, nil
}

func (r *remoteSource) blob(context.Context, string) (*staged, error) {
	return nil, fmt.Errorf("a pull reads blobs by descriptor: %w", errdefs.ErrInternal)
}

// blobDesc fetches (or finds) the blob d names: a JSON document when doc
// is set (bounded as one whatever media type d claims), else a layer.
func (r *remoteSource) blobDesc(ctx context.Context, d ocispec.Descriptor, doc bool) (*staged, error) {
	if st, ok := r.staged[d.Digest]; ok {
		return st, nil
	}
	lim := r.in.lim
	if !doc {
		if d.Size > lim.MaxArchiveBytes {
			return nil, fmt.Errorf("blob %s: %d bytes exceed the limit of %d: %w", d.Digest, d.Size, lim.MaxArchiveBytes, errdefs.ErrResourceExhausted)
		}
	} else {
		if r.docs++; r.docs > MaxRemoteDocuments {
			return nil, fmt.Errorf("more than %d manifests, indexes and configs: %w", MaxRemoteDocuments, errdefs.ErrResourceExhausted)
		}
		if d.Size > lim.MaxJSONBytes {
			return nil, fmt.Errorf("blob %s: JSON document of %d bytes exceeds the limit of %d: %w", d.Digest, d.Size, lim.MaxJSONBytes, errdefs.ErrResourceExhausted)
		}
	}
	st, err := r.in.fetch(ctx, d, r.remote.Origin(), func() (io.ReadCloser, error) {
		rc, err := r.remote.Fetch(ctx, d)
		if err != nil {
			return nil, err
		}
		r.count.r = &sizedReader{r: rc, d: d}
		return struct {
			io.Reader
			io.Closer
		}{r.count, rc}, nil
	})
	if err != nil {
		return nil, err
	}
	r.staged[d.Digest] = st
	return st, nil
}

// sizedReader refuses a blob that streams past the size its descriptor
// declares, as soon as it does.
type sizedReader struct {
	r io.Reader
	d ocispec.Descriptor
	n int64
}

func (s *sizedReader) Read(p []byte) (int, error) {
	if left := s.d.Size - s.n + 1; int64(len(p)) > left {
		p = p[:left]
	}
	n, err := s.r.Read(p)
	s.n += int64(n)
	if s.n > s.d.Size {
		return n, fmt.Errorf("blob %s: more than the %d bytes its descriptor declares: %w", s.d.Digest, s.d.Size, errdefs.ErrInvalidArgument)
	}
	return n, err
}

// bytesRemote serves documents it holds, and asks next for the rest.
type bytesRemote struct {
	docs map[digest.Digest][]byte
	next Remote
}

func (b bytesRemote) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	if doc, ok := b.docs[d.Digest]; ok {
		return io.NopCloser(bytes.NewReader(doc)), nil
	}
	return b.next.Fetch(ctx, d)
}

func (b bytesRemote) Origin() string { return b.next.Origin() }

// WithDocuments returns a Remote that serves the given documents (a root
// manifest a registry client already read to resolve a tag, say) itself,
// by their digest, and fetches everything else from next. The documents
// are checked like any blob.
func WithDocuments(next Remote, docs ...[]byte) Remote {
	m := map[digest.Digest][]byte{}
	for _, d := range docs {
		m[digest.FromBytes(d)] = d
	}
	return bytesRemote{docs: m, next: next}
}
