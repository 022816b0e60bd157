package image

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/berthrun/berth/internal/errclass"
	"github.com/berthrun/berth/internal/fsutil"
)

// Store is a local content-addressed image store in one directory:
//
//	blobs/ALG/HEX   manifests, configs and layers, deduplicated by digest
//	store.json      the images (by manifest digest), their tags, and who
//	                holds an unpacked root filesystem
//	ingest/ID/      an import in progress (private to it)
//	rootfs/HEX/       unpacked root filesystems, one per image digest,
//	                  setuid/setgid bits and file capabilities cleared
//	rootfs-setid/HEX/ the same with them kept (WithSetidRootfs)
//	KIND/.fresh-HEX/  a tree the import put together (tree/, stats.json),
//	                  for the image's first Rootfs or Unpack to take
//	lock, *.lock      file locks
//
// store.json is the truth: it is replaced atomically, under the lock, after
// the blobs it names are in place, so a killed import leaves the store as
// it was (what it staged is removed by the next Open). Several
// goroutines and processes may use one store at once.
type Store struct {
	dir   string
	fsync bool
	// trees is the kind of tree Rootfs gives.
	trees treeKind
	// known are the analyses of layers in blobs/ (see knownLayers).
	known knownLayers
	// docs are the manifests and configs read already (see knownDocs).
	docs knownDocs
	// parsed is the last parse of store.json (see readIndexShared).
	parsed sharedIndex
}

type options struct {
	fsync bool
	setid bool
}

// Option configures a Store.
type Option func(*options) error

// WithFsync makes imports flush every blob to disk before the import is
// committed, so that a power loss cannot tear a blob store.json names.
// Without it a torn blob is still never used: every read verifies the
// blob's digest and reports a mismatch as data-loss.
func WithFsync() Option {
	return func(o *options) error { o.fsync = true; return nil }
}

// WithSetidRootfs makes Rootfs give trees that keep setuid and setgid
// bits and file capabilities (the security.capability attribute), as
// Docker and containerd do: what Kubernetes workloads expect, where a
// setuid program in the image must take effect in a container whose
// no_new_privs is off. By default Rootfs clears them.
//
// The trees are kept apart by kind (rootfs-setid/ beside rootfs/), so a
// store opened without this option, in this process or another, never
// gives a tree with the bits kept, nor this one a tree without them.
// Holds, Remove, ReleaseRootfs and the cleanup in Open handle both kinds
// whichever way the store was opened.
func WithSetidRootfs() Option {
	return func(o *options) error { o.setid = true; return nil }
}

const (
	indexFile = "store.json"
	lockFile  = "lock"
	blobsDir  = "blobs"
	ingestDir = "ingest"
	rootfsDir = "rootfs"
	setidDir  = "rootfs-setid"
)

// Open opens (creating if needed) the store in dir. It removes what killed
// imports and unpacks left behind.
func Open(dir string, opts ...Option) (*Store, error) {
	var o options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if dir == "" {
		return nil, fmt.Errorf("image store: empty directory: %w", errdefs.ErrInvalidArgument)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("image store %q: %v: %w", dir, err, errdefs.ErrInvalidArgument)
	}
	s := &Store{dir: abs, fsync: o.fsync, trees: defaultTrees}
	if o.setid {
		s.trees = setidTrees
	}
	for _, d := range []string{"", blobsDir, ingestDir, rootfsDir, setidDir} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o700); err != nil {
			return nil, fmt.Errorf("image store %q: %w", dir, errclass.OS(err))
		}
	}
	if err := s.recover(context.Background()); err != nil {
		return nil, fmt.Errorf("image store %q: %w", dir, err)
	}
	return s, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// index is store.json.
type index struct {
	Version int                          `json:"version"`
	Images  map[digest.Digest]*imageInfo `json:"images"`
	Tags    map[string]digest.Digest     `json:"tags"`
	// Holders maps a holder (a container) to the image whose unpacked
	// root filesystem it uses: "HOLDER" for a tree of rootfs/,
	// "HOLDER/setid" for one of rootfs-setid/ (see treeKind). A holder's
	// name holds no "/"; a store of an earlier version keeps the entry.
	Holders map[string]digest.Digest `json:"holders,omitempty"`
}

// imageInfo is an image's record.
type imageInfo struct {
	Config digest.Digest `json:"config"`
	// Blobs are the config and the layers, in order; the manifest is the
	// image's own digest.
	Blobs    []digest.Digest `json:"blobs"`
	Size     int64           `json:"size"`
	Imported time.Time       `json:"imported"`
}

func (s *Store) readIndex() (*index, error) {
	idx := &index{Version: 1}
	err := fsutil.ReadJSON(filepath.Join(s.dir, indexFile), idx)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading %s: %v: %w", indexFile, err, errdefs.ErrDataLoss)
	}
	return idx.filled(), nil
}

// sharedIndex caches the parse of store.json for readIndexShared.
type sharedIndex struct {
	mu  sync.Mutex
	raw []byte
	idx *index
}

// readIndexShared is readIndex for callers that only read the index (Get,
// List): the file is read at every call, but parsed again only when its
// bytes changed. The index it returns is shared: never to be changed.
func (s *Store) readIndexShared() (*index, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, indexFile))
	if errors.Is(err, fs.ErrNotExist) {
		return (&index{Version: 1}).filled(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %v: %w", indexFile, err, errdefs.ErrDataLoss)
	}
	s.parsed.mu.Lock()
	if s.parsed.idx != nil && bytes.Equal(s.parsed.raw, b) {
		idx := s.parsed.idx
		s.parsed.mu.Unlock()
		return idx, nil
	}
	s.parsed.mu.Unlock()
	idx := &index{Version: 1}
	if err := json.Unmarshal(b, idx); err != nil {
		return nil, fmt.Errorf("reading %s: %v: %w", indexFile, err, errdefs.ErrDataLoss)
	}
	idx = idx.filled()
	s.parsed.mu.Lock()
	s.parsed.raw, s.parsed.idx = b, idx
	s.parsed.mu.Unlock()
	return idx, nil
}

// filled gives idx's maps, empty if the file had none.
func (idx *index) filled() *index {
	if idx.Images == nil {
		idx.Images = map[digest.Digest]*imageInfo{}
	}
	if idx.Tags == nil {
		idx.Tags = map[string]digest.Digest{}
	}
	if idx.Holders == nil {
		idx.Holders = map[string]digest.Digest{}
	}
	return idx
}

func (s *Store) writeIndex(idx *index) error {
	if err := fsutil.WriteJSON(filepath.Join(s.dir, indexFile), idx); err != nil {
		return fmt.Errorf("writing %s: %w", indexFile, errclass.OS(err))
	}
	return nil
}

// blobPath is where the store keeps blob d.
func (s *Store) blobPath(d digest.Digest) string {
	return filepath.Join(s.dir, blobsDir, d.Algorithm().String(), d.Encoded())
}

// lock takes an flock on path (created if needed), waiting while ctx
// allows; shared takes a shared lock.
func lock(ctx context.Context, path string, shared bool) (func(), error) {
	release, err := fsutil.LockFileContext(ctx, path, fsutil.LockOptions{Shared: shared})
	if err != nil && ctx.Err() == nil {
		return nil, fmt.Errorf("lock %s: %w", path, errclass.OS(err))
	}
	return release, err
}

// tryLock takes an flock on a directory or file without waiting; ok is
// false when another holds it.
func tryLock(path string) (release func(), ok bool) {
	release, err := fsutil.LockFile(path, fsutil.LockOptions{Existing: true, NoWait: true})
	return release, err == nil
}

// locked runs fn holding the store's lock.
func (s *Store) locked(ctx context.Context, fn func() error) error {
	release, err := lock(ctx, filepath.Join(s.dir, lockFile), false)
	if err != nil {
		return err
	}
	defer release()
	return fn()
}

// recover removes what killed operations left: ingest directories no
// import holds, unpacks in progress no unpacker holds, trash, and blobs
// no image names (a commit killed between placing blobs and writing
// store.json).
func (s *Store) recover(ctx context.Context) error {
	for _, k := range treeKinds {
		dir := filepath.Join(s.dir, k.dir)
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			n := e.Name()
			switch {
			case strings.HasPrefix(n, ".trash-"):
				os.RemoveAll(filepath.Join(dir, n))
			case strings.HasPrefix(n, ".tmp-"):
				key, _, _ := strings.Cut(strings.TrimPrefix(n, ".tmp-"), "-")
				if release, ok := tryLock(filepath.Join(dir, key+".lock")); ok {
					os.RemoveAll(filepath.Join(dir, n))
					release()
				}
			}
		}
	}
	return s.locked(ctx, func() error {
		// Under the lock: an import creates and locks its ingest
		// directory holding the lock shared, so none is caught between.
		ents, _ := os.ReadDir(filepath.Join(s.dir, ingestDir))
		for _, e := range ents {
			p := filepath.Join(s.dir, ingestDir, e.Name())
			if release, ok := tryLock(p); ok {
				os.RemoveAll(p)
				release()
			}
		}
		idx, err := s.readIndex()
		if err != nil {
			return err
		}
		return s.collect(idx)
	})
}

// collect removes blobs no image of idx names and unpacked root
// filesystems of images that are gone and that nobody holds. The caller
// holds the store lock.
func (s *Store) collect(idx *index) error {
	used := map[digest.Digest]bool{}
	for d, im := range idx.Images {
		used[d] = true
		for _, b := range im.Blobs {
			used[b] = true
		}
	}
	algs, _ := os.ReadDir(filepath.Join(s.dir, blobsDir))
	for _, a := range algs {
		blobs, _ := os.ReadDir(filepath.Join(s.dir, blobsDir, a.Name()))
		for _, b := range blobs {
			if !used[digest.NewDigestFromEncoded(digest.Algorithm(a.Name()), b.Name())] {
				d := digest.NewDigestFromEncoded(digest.Algorithm(a.Name()), b.Name())
				s.known.forget(d)
				s.docs.forget(d)
				if err := os.Remove(filepath.Join(s.dir, blobsDir, a.Name(), b.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return errclass.OS(err)
				}
			}
		}
	}
	for _, k := range treeKinds {
		if err := s.collectTrees(idx, k); err != nil {
			return err
		}
	}
	return nil
}

// collectTrees removes the trees of kind k whose image is gone and that
// no holder holds. The caller holds the store lock.
func (s *Store) collectTrees(idx *index, k treeKind) error {
	held := map[string]bool{}
	for d := range idx.Images {
		held[d.Encoded()] = true
	}
	for key, d := range idx.Holders {
		if kindOfHold(key) == k {
			held[d.Encoded()] = true
		}
	}
	dir := filepath.Join(s.dir, k.dir)
	trees, _ := os.ReadDir(dir)
	for _, t := range trees {
		n := t.Name()
		if d, ok := freshImage(n); ok && t.IsDir() {
			// An import's tree, for its image only.
			if err := s.collectFresh(idx, k, d); err != nil {
				return err
			}
			continue
		}
		if !t.IsDir() || strings.HasPrefix(n, ".") || held[n] {
			continue
		}
		// An unpack of this tree in progress (by a caller that checked
		// the image before it went) keeps it for now.
		release, ok := tryLock(filepath.Join(dir, n+".lock"))
		if !ok {
			continue
		}
		trash := filepath.Join(dir, ".trash-"+n+"-"+randomID())
		err := os.Rename(filepath.Join(dir, n), trash)
		release()
		if err != nil {
			return errclass.OS(err)
		}
		if err := os.RemoveAll(trash); err != nil {
			return errclass.OS(err)
		}
	}
	return nil
}

// collectFresh removes the tree an import put together for image hex, of
// kind k, if the image is gone or the tree was taken half-way. The caller
// holds the store lock.
func (s *Store) collectFresh(idx *index, k treeKind, hex string) error {
	dir := filepath.Join(s.dir, k.dir)
	wrap := filepath.Join(dir, freshPrefix+hex)
	if _, ok := idx.Images[digest.NewDigestFromEncoded(digest.SHA256, hex)]; ok {
		if _, err := os.Lstat(filepath.Join(wrap, "tree")); err == nil {
			return nil
		}
	}
	// An unpack taking it holds its lock; with no lock file, none ever
	// did (and one that starts now finds the tree gone, and unpacks).
	release, err := fsutil.LockFile(filepath.Join(dir, hex+".lock"), fsutil.LockOptions{Existing: true, NoWait: true})
	if errors.Is(err, fs.ErrNotExist) {
		release, err = func() {}, nil
	}
	if err != nil {
		return nil // being taken
	}
	trash := filepath.Join(dir, ".trash-"+hex+"-"+randomID())
	err = os.Rename(wrap, trash)
	release()
	if err != nil {
		return errclass.OS(err)
	}
	return errclass.OS(os.RemoveAll(trash))
}

func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
