package image

import (
	"context"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/berthrun/berth/image/layer"
	"github.com/berthrun/berth/image/unpack"
	"github.com/berthrun/berth/internal/errclass"
)

// ingest is one import's private staging directory. Everything the archive
// holds is written there first, verified, and moved into blobs/ only when
// the import commits. The directory is flocked while the import lives, so
// that Open can tell a live import from one that was killed.
type ingest struct {
	s       *Store
	dir     string
	release func()
	lim     Limits
	n       int
	// trees, when set, unpacks layers as they stream in, for the new
	// images' trees (see unpacking); recorded counts the memory their
	// records take.
	trees    bool
	recorded int

	mu           sync.Mutex
	uncompressed int64
	// shared are the files this import fetched and shared with
	// concurrent pulls, locks the lock files it took for them (see
	// fetch); close removes them.
	shared, locks []string
}

// staged is a file of the archive written to the ingest directory.
type staged struct {
	name string // path in the archive
	path string // staged file
	info *layer.Info
	// layer is the layer unpacked on its own as it streamed in, if it
	// was (see unpacking); nil once an image's tree took it.
	layer *unpack.Layer
}

// newIngest makes an import's working directory; trees asks that layers be
// unpacked as they stream in, for the new images' trees (on Linux: the
// unpacker's platform).
func (s *Store) newIngest(lim Limits, trees bool) (*ingest, error) {
	dir := filepath.Join(s.dir, ingestDir, randomID())
	var release func()
	// Created and locked under the store lock (shared), so that a
	// concurrent Open's cleanup cannot take it for a dead one in between.
	err := s.shared(context.Background(), func() error {
		if err := os.Mkdir(dir, 0o700); err != nil {
			return errclass.OS(err)
		}
		var ok bool
		if release, ok = tryLock(dir); !ok {
			os.RemoveAll(dir)
			return fmt.Errorf("cannot lock %s: %w", dir, errdefs.ErrUnavailable)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &ingest{s: s, dir: dir, release: release, lim: lim, trees: trees && goruntime.GOOS == "linux"}, nil
}

// close removes what was not committed, and what it shared.
func (in *ingest) close() {
	for _, p := range in.shared {
		os.Remove(p)
	}
	// A lock file goes when no pull waits on it; one that opened it just
	// before still fetches safely, at worst twice.
	for _, p := range in.locks {
		if release, ok := tryLock(p); ok {
			os.Remove(p)
			release()
		}
	}
	os.RemoveAll(in.dir)
	in.release()
}

// chunkSize is the unit the stager reads, writes and hands over; a few of
// them in flight keep both cores busy within a few MiB.
const (
	chunkSize   = 1 << 20
	chunksAhead = 4
)

// stage writes r (an archive entry named name) to a new file while a second
// goroutine hashes it with alg and analyzes it as a layer. Limits stop it
// early. want, when set, is the digest the entry must have.
func (in *ingest) stage(ctx context.Context, name string, r io.Reader, alg digest.Algorithm, want digest.Digest) (*staged, error) {
	in.n++
	p := filepath.Join(in.dir, strconv.Itoa(in.n))
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, errclass.OS(err)
	}
	defer f.Close()
	x := in.unpacking(want)
	defer x.close()
	info, err := in.analyze(ctx, name, r, f, alg, x.each())
	if err != nil {
		return nil, err
	}
	if in.s.fsync {
		if err := f.Sync(); err != nil {
			return nil, errclass.OS(err)
		}
	}
	if err := f.Close(); err != nil {
		return nil, errclass.OS(err)
	}
	if want != "" && info.Digest != want {
		return nil, fmt.Errorf("archive entry %q: digest %s does not match its name: %w", name, info.Digest, errdefs.ErrInvalidArgument)
	}
	in.account(info)
	st := &staged{name: name, path: p, info: info}
	if info.NotLayer == nil {
		st.layer = x.finish()
	}
	return st, nil
}

// account counts a staged layer against the import's uncompressed budget.
func (in *ingest) account(info *layer.Info) {
	if info.NotLayer == nil {
		in.mu.Lock()
		in.uncompressed += info.UncompressedSize
		in.mu.Unlock()
	}
}

// left is what is left of the import's uncompressed budget.
func (in *ingest) left() int64 {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.lim.MaxUncompressedBytes - in.uncompressed
}

// analyze copies r to f (io.Discard for a file already in place) while the
// layer analyzer reads the same chunks, within what is left of the
// import's uncompressed budget, and gives each entry to each (if not nil).
func (in *ingest) analyze(ctx context.Context, name string, r io.Reader, f io.Writer, alg digest.Algorithm, each layer.EachFunc) (*layer.Info, error) {
	if !alg.Available() {
		return nil, fmt.Errorf("digest algorithm %q: %w", alg, errdefs.ErrInvalidArgument)
	}
	// The copier hashes the blob as it writes it; the analyzer
	// decompresses, checks and unpacks the same chunks meanwhile.
	h := alg.Hash()
	left := in.left()
	cp := newChunkPipe()
	type result struct {
		info *layer.Info
		err  error
	}
	done := make(chan result, 1)
	go func() {
		info, err := layer.AnalyzeEach(cp, "", in.lim.layerLimits(left), each)
		cp.closeRead()
		done <- result{info, err}
	}()
	werr := copyChunks(ctx, r, f, h, cp)
	cp.closeWrite(werr)
	res := <-done
	cp.recycle()
	if werr != nil {
		return nil, werr
	}
	if res.err != nil {
		return nil, fmt.Errorf("archive entry %q: %w", name, res.err)
	}
	res.info.SetDigest(digest.NewDigest(alg, h))
	return res.info, nil
}

// copyChunks reads r into the pipe's chunks and hashes and writes each to
// f, until r ends, ctx is done or the analyzer stops taking chunks.
func copyChunks(ctx context.Context, r io.Reader, f io.Writer, h hash.Hash, cp *chunkPipe) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		buf, ok := cp.get()
		if !ok {
			return nil // the analyzer stopped; its result says why
		}
		n, err := io.ReadFull(r, buf)
		h.Write(buf[:n])
		if n > 0 {
			if _, werr := f.Write(buf[:n]); werr != nil {
				cp.put(buf[:0])
				return errclass.OS(werr)
			}
		}
		cp.put(buf[:n])
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// chunkPipe hands chunks from the stager to the analyzer without copying
// them, a few at a time.
type chunkPipe struct {
	free chan []byte
	data chan []byte
	quit chan struct{} // closed when the analyzer stops reading
	once sync.Once

	werr error
	cur  []byte
	off  int
}

func newChunkPipe() *chunkPipe {
	cp := &chunkPipe{free: make(chan []byte, chunksAhead), data: make(chan []byte, chunksAhead), quit: make(chan struct{})}
	for range chunksAhead {
		cp.free <- *chunkPool.Get().(*[]byte)
	}
	return cp
}

var chunkPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// get returns an empty chunk to fill, or false once the reader quit.
func (cp *chunkPipe) get() ([]byte, bool) {
	select {
	case b := <-cp.free:
		return b[:cap(b)], true
	case <-cp.quit:
		return nil, false
	}
}

// put hands a filled chunk to the reader.
func (cp *chunkPipe) put(b []byte) {
	select {
	case cp.data <- b:
	case <-cp.quit:
	}
}

// closeWrite ends the stream; the reader sees err (nil: EOF) after the
// chunks already sent.
func (cp *chunkPipe) closeWrite(err error) {
	cp.werr = err
	close(cp.data)
}

func (cp *chunkPipe) closeRead() { cp.once.Do(func() { close(cp.quit) }) }

// recycle returns the idle chunks to the pool once both ends are done.
func (cp *chunkPipe) recycle() {
	for {
		select {
		case b := <-cp.free:
			b = b[:cap(b)]
			chunkPool.Put(&b)
		default:
			return
		}
	}
}

func (cp *chunkPipe) Read(p []byte) (int, error) {
	for cp.off >= len(cp.cur) {
		if cp.cur != nil {
			cp.free <- cp.cur
			cp.cur = nil
		}
		b, ok := <-cp.data
		if !ok {
			if cp.werr != nil {
				return 0, cp.werr
			}
			return 0, io.EOF
		}
		cp.cur, cp.off = b, 0
	}
	n := copy(p, cp.cur[cp.off:])
	cp.off += n
	return n, nil
}

// readDoc reads a staged JSON document, refusing one over the limit.
func (in *ingest) readDoc(st *staged) ([]byte, error) {
	if st.info.Size > in.lim.MaxJSONBytes {
		return nil, fmt.Errorf("archive entry %q: JSON document of %d bytes exceeds the limit of %d: %w", st.name, st.info.Size, in.lim.MaxJSONBytes, errdefs.ErrResourceExhausted)
	}
	return os.ReadFile(st.path)
}

// readCapped reads r whole unless it exceeds max bytes.
func readCapped(name string, r io.Reader, max int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("archive entry %q: JSON document exceeds the limit of %d bytes: %w", name, max, errdefs.ErrResourceExhausted)
	}
	return b, nil
}
