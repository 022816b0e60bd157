package unpack

import (
	"archive/tar"
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/image/layer"
)

// Unpacker applies layers to one root directory, in order.
type Unpacker struct {
	root  int
	opts  Options
	chown bool
	umask uint32
	stats Stats

	// cached parent directory of the last entry; marked stale whenever a
	// directory is removed (and closed at the next lookup: the entry
	// being applied still uses it).
	cacheName  string
	cacheFD    int
	cacheStale bool

	// dirTimes are set once every layer is applied: creating entries in
	// a directory changes its times.
	dirTimes map[string][2]unix.Timespec
	// created holds the names the current layer created: its whiteouts
	// only hide what the layers below it made.
	created   map[string]struct{}
	nameBytes int
	buf       []byte
	entries   int // of the current layer

	// rec, when set, records what Merge needs of the one layer unpacked
	// (see NewLayer).
	rec *recorder

	// writers fill small files in parallel with the applying goroutine.
	jobs        chan writeJob
	writersWG   sync.WaitGroup
	pending     sync.WaitGroup
	unsupported atomic.Int64
	errOnce     sync.Once
	writeErr    error
}

// New opens an unpacker on dir, an existing directory, normally empty.
func New(dir string, opts Options) (*Unpacker, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("unpack into %q: %w", dir, classify(err))
	}
	return &Unpacker{
		root:     fd,
		opts:     opts,
		chown:    os.Geteuid() == 0,
		umask:    readUmask(),
		cacheFD:  -1,
		dirTimes: map[string][2]unix.Timespec{},
		buf:      make([]byte, 1<<20),
	}, nil
}

// Stats tells what the unpacker did so far.
func (u *Unpacker) Stats() Stats { return u.stats }

// Close sets the directories' times and releases the unpacker.
func (u *Unpacker) Close() error {
	u.drop()
	first := u.flush()
	if u.jobs != nil {
		close(u.jobs)
		u.writersWG.Wait()
		u.jobs = nil
	}
	for name, ts := range u.dirTimes {
		fd, err := u.open(name, unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			continue // removed or replaced by a later layer
		}
		if err := futimens(fd, ts); err != nil && first == nil {
			first = fmt.Errorf("layer entry %q: times: %w", name, classify(err))
		}
		unix.Close(fd)
	}
	u.dirTimes = nil
	if u.root >= 0 {
		unix.Close(u.root)
		u.root = -1
	}
	return first
}

// Apply applies one uncompressed layer read from r.
func (u *Unpacker) Apply(ctx context.Context, r io.Reader) error {
	if u.root < 0 {
		return fmt.Errorf("unpacker closed: %w", errdefs.ErrFailedPrecondition)
	}
	defer u.drop()
	// Whatever happens, no writer is still busy with this layer's files
	// when Apply returns.
	defer u.flush()
	u.begin()
	tr := tar.NewReader(bufio.NewReaderSize(r, 64<<10))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return u.flush()
		}
		if err != nil {
			if errdefs.IsResourceExhausted(err) || errdefs.IsInvalidArgument(err) || errdefs.IsDataLoss(err) {
				return err
			}
			return fmt.Errorf("layer: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		if u.entries%256 == 255 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := u.next(h, tr); err != nil {
			return err
		}
	}
}

// begin starts a layer.
func (u *Unpacker) begin() {
	for name := range u.created {
		u.nameBytes -= len(name)
	}
	u.created = map[string]struct{}{}
	u.entries = 0
}

// next checks and applies the layer's next entry, its content read from r.
func (u *Unpacker) next(h *tar.Header, r io.Reader) error {
	if u.entries++; u.opts.Limits.MaxEntries > 0 && u.entries > u.opts.Limits.MaxEntries {
		return fmt.Errorf("layer has more than %d entries: %w", u.opts.Limits.MaxEntries, errdefs.ErrResourceExhausted)
	}
	name, err := layer.CheckHeader(h, u.opts.Limits)
	if err != nil {
		return err
	}
	if err := u.entry(name, h, r); err != nil {
		return err
	}
	u.stats.Entries++
	return nil
}

func (u *Unpacker) entry(name string, h *tar.Header, r io.Reader) error {
	if name == "." {
		return u.rootEntry(h)
	}
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	if strings.HasPrefix(base, layer.WhiteoutPrefix) {
		return u.whiteout(name, dir, base)
	}
	if _, dup := u.created[name]; dup && u.rec != nil {
		// What the layer does to a name it gave twice is not in
		// its tree alone.
		u.rec.upper = false
	}
	pfd, err := u.parent(dir, true)
	if err != nil {
		return entryErr(h.Name, "parent directory", err)
	}
	switch h.Typeflag {
	case tar.TypeReg:
		err = u.file(pfd, base, h, r)
	case tar.TypeDir:
		err = u.dir(pfd, name, base, h)
	case tar.TypeSymlink:
		err = u.replace(pfd, base, func() error { return unix.Symlinkat(h.Linkname, pfd, base) })
		if err == nil {
			err = u.linkMeta(pfd, base, h)
		}
	case tar.TypeLink:
		err = u.hardlink(pfd, base, h)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		err = u.node(pfd, base, h)
	}
	if err != nil {
		return entryErr(h.Name, "", err)
	}
	return u.remember(u.created, name)
}

// maxNameBytes bounds the names an unpacker keeps (this layer's and the
// directories whose times it sets), so that memory stays bounded whatever
// the image.
const maxNameBytes = 128 << 20

// remember adds name to a set the unpacker keeps.
func (u *Unpacker) remember(set map[string]struct{}, name string) error {
	if _, ok := set[name]; ok {
		return nil
	}
	if u.nameBytes += len(name); u.nameBytes > maxNameBytes {
		return fmt.Errorf("layer entry %q: more than %d bytes of names to keep: %w", name, maxNameBytes, errdefs.ErrResourceExhausted)
	}
	set[name] = struct{}{}
	return nil
}
