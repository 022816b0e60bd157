package layer

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

// Info is what Analyze learned of a blob.
type Info struct {
	// Digest and Size are the blob's, as it streamed.
	Digest digest.Digest
	Size   int64
	// NotLayer is set when the blob is not a layer berth takes: it failed
	// to decompress or to parse as a tar, or an entry was refused. The
	// fields below are then meaningless.
	NotLayer error

	Compression Compression
	// DiffID is the digest of the uncompressed tar stream (the blob's own
	// digest when it is not compressed).
	DiffID digest.Digest
	// UncompressedSize is the size of the uncompressed tar stream.
	UncompressedSize int64
	// Entries counts the tar entries.
	Entries int
}

// Analyze reads r to its end and tells what it holds; alg is the digest
// algorithm of Info.Digest (the diff ID is always sha256, as image configs
// name it). It returns an error only when reading r fails or a limit is
// exceeded (resource-exhausted), as soon as that happens.
func Analyze(r io.Reader, alg digest.Algorithm, l Limits) (*Info, error) {
	return AnalyzeEach(r, alg, l, nil)
}

// EachFunc is given each entry of a layer as AnalyzeEach reads it, once the
// entry passed the checks, with the entry's content readable from r until
// it returns.
type EachFunc func(h *tar.Header, r io.Reader) error

// AnalyzeEach is Analyze, giving each entry to each as it goes (unless each
// is nil): so that a layer can be unpacked in the same pass that checks
// it. Once each returns an error it is not called again, and the analysis
// goes on: what each makes of the entries (and of their errors) is the
// caller's; an entry given to each does not make the blob a layer, only
// Info.NotLayer tells.
//
// An empty alg leaves the blob's digest to the caller, who hashes the
// same bytes as it hands them over (beside the analysis rather than
// before it) and records the digest with Info.SetDigest.
func AnalyzeEach(r io.Reader, alg digest.Algorithm, l Limits, each EachFunc) (*Info, error) {
	raw := &hashReader{r: r}
	if alg != "" {
		if !alg.Available() {
			return nil, fmt.Errorf("digest algorithm %q: %w", alg, errdefs.ErrInvalidArgument)
		}
		raw.h = alg.Hash()
	}
	info := &Info{}
	err := analyze(raw, l, info, each)
	if err != nil && (isReadError(err) || errdefs.IsResourceExhausted(err)) {
		return nil, err
	}
	if err != nil {
		info.NotLayer = err
	}
	// The whole blob is hashed, layer or not, and nothing more is
	// decompressed once it is known not to be a layer.
	if _, err := io.Copy(io.Discard, raw); err != nil {
		return nil, &readError{err}
	}
	info.Size = raw.n
	if raw.h != nil {
		info.SetDigest(digest.NewDigest(alg, raw.h))
	}
	return info, nil
}

// SetDigest records the blob's digest, computed by the caller of an
// AnalyzeEach with no algorithm: an uncompressed layer's diff ID is its
// sha256 digest.
func (i *Info) SetDigest(d digest.Digest) {
	i.Digest = d
	if i.NotLayer == nil && i.Compression == None && d.Algorithm() == digest.SHA256 {
		i.DiffID = d
	}
}

func analyze(raw *hashReader, l Limits, info *Info, each EachFunc) error {
	br := bufio.NewReaderSize(raw, 64<<10)
	c, err := Detect(br)
	if err != nil {
		return err
	}
	info.Compression = c
	dr, err := c.reader(br)
	if err != nil {
		return err
	}
	defer dr.Close()
	g := &guardReader{r: dr, raw: raw, l: l}
	stream := io.Reader(g)
	if c != None {
		g.h = digest.SHA256.Hash()
		// Decompressing and hashing the stream run beside the parse
		// (and whatever each does with the entries).
		ra := NewReadahead(g)
		defer ra.Close()
		stream = ra
	}
	tr := tar.NewReader(stream)
	links := &symlinkGuard{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return notTar(err)
		}
		info.Entries++
		if l.MaxEntries > 0 && info.Entries > l.MaxEntries {
			return exhausted("layer has more than %d entries", l.MaxEntries)
		}
		name, err := CheckHeader(h, l)
		if err != nil {
			return err
		}
		if err := links.check(name, h); err != nil {
			return err
		}
		if base := path.Base(name); strings.HasPrefix(base, WhiteoutPrefix) && !strings.HasPrefix(base, WhiteoutMeta) {
			links.forget(path.Join(path.Dir(name), base[len(WhiteoutPrefix):]))
		}
		if each != nil {
			if err := each(h, tr); err != nil {
				each = nil
			}
		}
	}
	// A tar's end marker may be followed by padding: the diff ID covers
	// the whole uncompressed stream.
	if _, err := io.Copy(io.Discard, stream); err != nil {
		return notTar(err)
	}
	if ra, ok := stream.(*Readahead); ok {
		ra.Close() // g is the caller's again
	}
	info.UncompressedSize = g.n
	if g.h != nil {
		info.DiffID = digest.NewDigest(digest.SHA256, g.h)
	}
	return nil
}

// notTar passes limit and read errors through and makes others
// invalid-argument.
func notTar(err error) error {
	if errdefs.IsResourceExhausted(err) || isReadError(err) || errdefs.IsInvalidArgument(err) {
		return err
	}
	return fmt.Errorf("not a valid layer: %v: %w", err, errdefs.ErrInvalidArgument)
}

// readError marks a failure of the underlying reader, as opposed to bad
// content.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

func isReadError(err error) bool {
	var re *readError
	return errors.As(err, &re)
}

// hashReader hashes (if h is set) and counts what it reads; errors of the underlying
// reader come out as readErrors.
type hashReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (r *hashReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if r.h != nil {
		r.h.Write(p[:n])
	}
	r.n += int64(n)
	if err != nil && err != io.EOF {
		if _, ok := err.(*readError); !ok {
			err = &readError{err}
		}
	}
	return n, err
}

// guardReader counts (and hashes, if h is set) the uncompressed stream and
// stops it when it grows past the size or ratio limit.
type guardReader struct {
	r   io.Reader
	raw *hashReader
	h   hash.Hash
	n   int64
	l   Limits
}

func (g *guardReader) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	if g.h != nil {
		g.h.Write(p[:n])
	}
	g.n += int64(n)
	if g.l.MaxSize > 0 && g.n > g.l.MaxSize {
		return n, exhausted("layer decompresses to more than %d bytes", g.l.MaxSize)
	}
	if g.l.MaxRatio > 0 && g.n > RatioGrace && g.n/g.l.MaxRatio > g.raw.n {
		return n, exhausted("layer decompresses more than %d times its size (%d bytes from %d)", g.l.MaxRatio, g.n, g.raw.n)
	}
	return n, err
}
