package unpack

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/image/layer"
)

// Options relax the unpacker's defaults.
type Options struct {
	// AllowDevices creates character and block device nodes; by default
	// they are dropped.
	AllowDevices bool
	// AllowSetid keeps setuid and setgid bits on files and their
	// security.capability attribute; by default both are cleared.
	AllowSetid bool
	// Limits are checked again on every entry (names, depth, entries per
	// layer); the zero value checks names only.
	Limits layer.Limits
}

// Stats counts what an unpacker did and dropped.
type Stats struct {
	Entries        int // entries applied, whiteouts included
	DevicesDropped int
	SetidCleared   int // files whose setuid/setgid bits or capabilities went
	XattrsDropped  int // trusted.* (and unsupported) extended attributes
}

// resolveFlags confine every lookup to the root and refuse symlinks and
// mount crossings on the way.
const resolveFlags = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

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
	for name := range u.created {
		u.nameBytes -= len(name)
	}
	u.created = map[string]struct{}{}
	tr := tar.NewReader(bufio.NewReaderSize(r, 64<<10))
	entries := 0
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
		if entries++; entries%256 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if l := u.opts.Limits.MaxEntries; l > 0 && entries > l {
			return fmt.Errorf("layer has more than %d entries: %w", l, errdefs.ErrResourceExhausted)
		}
		name, err := layer.CheckHeader(h, u.opts.Limits)
		if err != nil {
			return err
		}
		if err := u.entry(name, h, tr); err != nil {
			return err
		}
		u.stats.Entries++
	}
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

func entryErr(name, what string, err error) error {
	if what != "" {
		what += ": "
	}
	return fmt.Errorf("layer entry %q: %s%w", name, what, classify(err))
}

// classify gives system errors their errdefs class.
func classify(err error) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return err
	}
	switch errno {
	case unix.ELOOP:
		return fmt.Errorf("resolves through a symlink: %w", errdefs.ErrInvalidArgument)
	case unix.EXDEV:
		return fmt.Errorf("crosses a mount point: %w", errdefs.ErrInvalidArgument)
	case unix.ENOTDIR:
		return fmt.Errorf("a parent is not a directory: %w", errdefs.ErrInvalidArgument)
	case unix.ENAMETOOLONG:
		return fmt.Errorf("name too long: %w", errdefs.ErrInvalidArgument)
	case unix.ENOSPC, unix.EDQUOT:
		return fmt.Errorf("%w: %w", err, errdefs.ErrResourceExhausted)
	case unix.EPERM, unix.EACCES:
		return fmt.Errorf("%w: %w", err, errdefs.ErrPermissionDenied)
	case unix.ENOENT:
		return fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
	}
	return err
}

// open resolves name under the root.
func (u *Unpacker) open(name string, flags uint64) (int, error) {
	how := &unix.OpenHow{Flags: flags | unix.O_CLOEXEC | unix.O_NOFOLLOW, Resolve: resolveFlags}
	for {
		fd, err := unix.Openat2(u.root, name, how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

// parent returns a descriptor of directory dir (cached: do not close it),
// creating missing directories when create is set.
func (u *Unpacker) parent(dir string, create bool) (int, error) {
	if dir == "." {
		return u.root, nil
	}
	if u.cacheFD >= 0 && u.cacheName == dir && !u.cacheStale {
		return u.cacheFD, nil
	}
	fd, err := u.open(dir, unix.O_PATH|unix.O_DIRECTORY)
	if err == unix.ENOENT && create {
		fd, err = u.mkdirAll(dir)
	}
	if err != nil {
		return -1, err
	}
	u.drop()
	u.cacheName, u.cacheFD = dir, fd
	return fd, nil
}

// mkdirAll creates dir and its missing parents (0755, root's) and opens it.
func (u *Unpacker) mkdirAll(dir string) (int, error) {
	pdir := path.Dir(dir)
	pfd := u.root
	if pdir != "." {
		fd, err := u.open(pdir, unix.O_PATH|unix.O_DIRECTORY)
		if err == unix.ENOENT {
			fd, err = u.mkdirAll(pdir)
		}
		if err != nil {
			return -1, err
		}
		defer unix.Close(fd)
		pfd = fd
	}
	if err := unix.Mkdirat(pfd, path.Base(dir), 0o755); err != nil && err != unix.EEXIST {
		return -1, err
	}
	return u.open(dir, unix.O_PATH|unix.O_DIRECTORY)
}

// invalidate marks the cached parent stale after a directory removal.
func (u *Unpacker) invalidate() { u.cacheStale = true }

// drop closes the cached parent.
func (u *Unpacker) drop() {
	if u.cacheFD >= 0 {
		unix.Close(u.cacheFD)
	}
	u.cacheName, u.cacheFD, u.cacheStale = "", -1, false
}

// replace runs create; when the name exists it removes what is there
// (a directory with everything in it) and tries once more.
func (u *Unpacker) replace(pfd int, base string, create func() error) error {
	err := create()
	if err != unix.EEXIST {
		return err
	}
	if err := u.remove(pfd, base); err != nil {
		return err
	}
	return create()
}

// remove deletes base from directory pfd, recursively for a directory.
func (u *Unpacker) remove(pfd int, base string) error {
	err := unix.Unlinkat(pfd, base, 0)
	switch err {
	case nil, unix.ENOENT:
		return nil
	case unix.EISDIR:
		u.invalidate()
		return removeAll(pfd, base)
	}
	return err
}

func removeAll(pfd int, base string) error {
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == unix.ENOTDIR || err == unix.ELOOP {
		return unix.Unlinkat(pfd, base, 0)
	}
	if err != nil {
		if err == unix.ENOENT {
			return nil
		}
		return err
	}
	if err := removeChildren(fd, nil); err != nil {
		unix.Close(fd)
		return err
	}
	unix.Close(fd)
	if err := unix.Unlinkat(pfd, base, unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		return err
	}
	return nil
}

// removeChildren empties the directory fd, keeping the names keep says.
func removeChildren(fd int, keep func(string) bool) error {
	dup, err := unix.Dup(fd)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(dup), "dir")
	defer f.Close()
	for {
		names, err := f.Readdirnames(1024)
		for _, n := range names {
			if keep != nil && keep(n) {
				continue
			}
			if err := unix.Unlinkat(fd, n, 0); err == unix.EISDIR {
				if err := removeAll(fd, n); err != nil {
					return err
				}
			} else if err != nil && err != unix.ENOENT {
				return err
			}
		}
		if err == io.EOF || len(names) == 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (u *Unpacker) whiteout(name, dir, base string) error {
	if strings.HasPrefix(base, layer.WhiteoutMeta) && base != layer.OpaqueWhiteout {
		return nil // aufs bookkeeping (.wh..wh.plnk...): nothing to apply
	}
	pfd, err := u.parent(dir, false)
	if err != nil {
		if err == unix.ENOENT {
			return nil // nothing below to hide
		}
		return entryErr(name, "whiteout", err)
	}
	if base == layer.OpaqueWhiteout {
		fd, err := unix.Openat(pfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return entryErr(name, "opaque directory", err)
		}
		defer unix.Close(fd)
		prefix := dir + "/"
		if dir == "." {
			prefix = ""
		}
		err = removeChildren(fd, func(child string) bool {
			_, ok := u.created[prefix+child]
			return ok
		})
		u.invalidate()
		if err != nil {
			return entryErr(name, "opaque directory", err)
		}
		return nil
	}
	target := base[len(layer.WhiteoutPrefix):]
	if _, ok := u.created[path.Join(dir, target)]; ok {
		return nil // made by this layer: a whiteout hides the layers below only
	}
	if err := u.remove(pfd, target); err != nil {
		return entryErr(name, "whiteout", err)
	}
	return nil
}

func (u *Unpacker) rootEntry(h *tar.Header) error {
	if err := u.meta(u.root, h, u.perm(h, true), true); err != nil {
		return entryErr(h.Name, "", err)
	}
	u.dirTimes["."] = times(h)
	return nil
}

func (u *Unpacker) dir(pfd int, name, base string, h *tar.Header) error {
	perm := u.perm(h, true)
	err := unix.Mkdirat(pfd, base, perm)
	existed := err == unix.EEXIST
	if existed {
		var st unix.Stat_t
		if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if err := u.remove(pfd, base); err != nil {
				return err
			}
			err = unix.Mkdirat(pfd, base, perm)
		} else {
			err = nil
		}
	}
	if err != nil {
		return err
	}
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := u.meta(fd, h, perm, existed); err != nil {
		return err
	}
	if _, ok := u.dirTimes[name]; !ok {
		if u.nameBytes += len(name); u.nameBytes > maxNameBytes {
			return fmt.Errorf("more than %d bytes of names to keep: %w", maxNameBytes, errdefs.ErrResourceExhausted)
		}
	}
	u.dirTimes[name] = times(h)
	return nil
}

func (u *Unpacker) file(pfd int, base string, h *tar.Header, r io.Reader) error {
	perm := u.perm(h, false)
	var fd int
	err := u.replace(pfd, base, func() (err error) {
		fd, err = unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm&0o777)
		return err
	})
	if err != nil {
		return err
	}
	if h.Size <= smallFile {
		// The namespace changes in order, here; writing the content and
		// metadata of small files goes to the writers, in parallel.
		bp := smallBufs.Get().(*[]byte)
		data := (*bp)[:h.Size]
		if _, err := io.ReadFull(r, data); err != nil {
			smallBufs.Put(bp)
			unix.Close(fd)
			if err == io.ErrUnexpectedEOF || err == io.EOF {
				return fmt.Errorf("truncated entry: %w", errdefs.ErrInvalidArgument)
			}
			return err
		}
		u.dispatch(writeJob{fd: fd, buf: bp, data: data, meta: u.plan(h, perm, false), times: times(h), name: h.Name})
		return nil
	}
	defer unix.Close(fd)
	if err := u.copy(fd, r, h.Size); err != nil {
		return err
	}
	if err := u.meta(fd, h, perm, false); err != nil {
		return err
	}
	return futimens(fd, times(h))
}

// smallFile is the size up to which a file's content is buffered and
// written by the writer goroutines.
const (
	smallFile = 256 << 10
	writers   = 2
	inFlight  = 64 // files buffered at most: 16 MiB
)

var smallBufs = sync.Pool{New: func() any { b := make([]byte, smallFile); return &b }}

// writeJob is a small file created in order by Apply, to be filled.
type writeJob struct {
	fd    int
	buf   *[]byte
	data  []byte
	meta  metaPlan
	times [2]unix.Timespec
	name  string
}

// dispatch hands a job to the writers, starting them on first use.
func (u *Unpacker) dispatch(j writeJob) {
	if u.jobs == nil {
		u.jobs = make(chan writeJob, inFlight)
		for range writers {
			u.writersWG.Add(1)
			go u.writer()
		}
	}
	u.pending.Add(1)
	u.jobs <- j
}

func (u *Unpacker) writer() {
	defer u.writersWG.Done()
	for j := range u.jobs {
		err := writeAll(j.fd, j.data)
		if err == nil {
			var n int
			n, err = j.meta.apply(j.fd)
			u.unsupported.Add(int64(n))
		}
		if err == nil {
			err = futimens(j.fd, j.times)
		}
		if cerr := unix.Close(j.fd); err == nil && cerr != nil {
			err = cerr
		}
		smallBufs.Put(j.buf)
		if err != nil {
			u.errOnce.Do(func() { u.writeErr = entryErr(j.name, "", err) })
		}
		u.pending.Done()
	}
}

// flush waits for the files handed to the writers and reports the first
// failure among them.
func (u *Unpacker) flush() error {
	u.pending.Wait()
	u.stats.XattrsDropped += int(u.unsupported.Swap(0))
	return u.writeErr
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return classify(err)
		}
		b = b[n:]
	}
	return nil
}

// copy writes the entry's n bytes from r to fd.
func (u *Unpacker) copy(fd int, r io.Reader, n int64) error {
	var written int64
	for written < n {
		want := min(int64(len(u.buf)), n-written)
		m, err := io.ReadFull(r, u.buf[:want])
		for off := 0; off < m; {
			w, werr := unix.Write(fd, u.buf[off:m])
			if werr == unix.EINTR {
				continue
			}
			if werr != nil {
				return classify(werr)
			}
			off += w
		}
		written += int64(m)
		if err != nil {
			if err == io.ErrUnexpectedEOF || err == io.EOF {
				return fmt.Errorf("truncated entry: %w", errdefs.ErrInvalidArgument)
			}
			return err
		}
	}
	return nil
}

func (u *Unpacker) hardlink(pfd int, base string, h *tar.Header) error {
	target, _ := layer.CleanName(h.Linkname)
	tdir, tbase := path.Split(target)
	tdir = strings.TrimSuffix(tdir, "/")
	tfd := u.root
	if tdir != "" {
		fd, err := u.open(tdir, unix.O_PATH|unix.O_DIRECTORY)
		if err == unix.ENOENT {
			return fmt.Errorf("hardlink target %q is not in the root: %w", h.Linkname, errdefs.ErrInvalidArgument)
		}
		if err != nil {
			return fmt.Errorf("hardlink target %q: %w", h.Linkname, classify(err))
		}
		defer unix.Close(fd)
		tfd = fd
	}
	err := u.replace(pfd, base, func() error { return unix.Linkat(tfd, tbase, pfd, base, 0) })
	switch err {
	case unix.EPERM:
		return fmt.Errorf("hardlink target %q is a directory: %w", h.Linkname, errdefs.ErrInvalidArgument)
	case unix.ENOENT:
		return fmt.Errorf("hardlink target %q is not in the root: %w", h.Linkname, errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return fmt.Errorf("hardlink target %q: %w", h.Linkname, classify(err))
	}
	return nil
}

func (u *Unpacker) node(pfd int, base string, h *tar.Header) error {
	var kind uint32
	switch h.Typeflag {
	case tar.TypeChar:
		kind = unix.S_IFCHR
	case tar.TypeBlock:
		kind = unix.S_IFBLK
	default:
		kind = unix.S_IFIFO
	}
	if kind != unix.S_IFIFO && !u.opts.AllowDevices {
		u.stats.DevicesDropped++
		return nil
	}
	perm := u.perm(h, false)
	dev := int(unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor)))
	if err := u.replace(pfd, base, func() error { return unix.Mknodat(pfd, base, kind|perm&0o777, dev) }); err != nil {
		return err
	}
	// Metadata through a path: opening a device node is not harmless.
	if err := u.linkMeta(pfd, base, h); err != nil {
		return err
	}
	if perm&0o777 != perm || perm&u.umask != 0 || u.owned(h) {
		return unix.Fchmodat(pfd, base, perm, 0)
	}
	return nil
}

// linkMeta sets owner and times of a symlink or node without following it.
func (u *Unpacker) linkMeta(pfd int, base string, h *tar.Header) error {
	if u.owned(h) {
		if err := unix.Fchownat(pfd, base, h.Uid, h.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	ts := times(h)
	return unix.UtimesNanoAt(pfd, base, ts[:], unix.AT_SYMLINK_NOFOLLOW)
}

// owned reports whether the entry needs a chown: its owner is not the
// creator's (root) and the process may change it.
func (u *Unpacker) owned(h *tar.Header) bool {
	return u.chown && (h.Uid != 0 || h.Gid != 0)
}

// perm is the entry's permission bits after policy: setuid and setgid
// cleared on non-directories unless allowed (a setgid directory only
// passes its group on).
func (u *Unpacker) perm(h *tar.Header, isDir bool) uint32 {
	perm := uint32(h.Mode) & 0o7777
	if isDir {
		return perm &^ unix.S_ISUID
	}
	if perm&(unix.S_ISUID|unix.S_ISGID) != 0 && !u.opts.AllowSetid {
		perm &^= unix.S_ISUID | unix.S_ISGID
		u.stats.SetidCleared++
	}
	return perm
}

// metaPlan is what to set on a file or directory once it is open,
// decided (and counted) by the applying goroutine, applied by whichever
// goroutine writes the file.
type metaPlan struct {
	chown    bool
	uid, gid int
	chmod    bool
	perm     uint32
	xattrs   [][2]string
}

// plan decides owner, mode (perm, always when force is set) and extended
// attributes of an entry. Mode comes after owner when applied: chown
// clears setuid bits.
func (u *Unpacker) plan(h *tar.Header, perm uint32, force bool) metaPlan {
	m := metaPlan{chown: u.owned(h), uid: h.Uid, gid: h.Gid, perm: perm}
	m.chmod = force || m.chown || perm&^0o777 != 0 || perm&u.umask != 0
	for k, v := range h.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		if strings.HasPrefix(name, "trusted.") {
			u.stats.XattrsDropped++
			continue
		}
		if name == "security.capability" && !u.opts.AllowSetid {
			u.stats.SetidCleared++
			continue
		}
		m.xattrs = append(m.xattrs, [2]string{name, v})
	}
	return m
}

// apply sets the planned metadata on fd; it returns how many extended
// attributes the file system did not support.
func (m *metaPlan) apply(fd int) (int, error) {
	if m.chown {
		if err := unix.Fchown(fd, m.uid, m.gid); err != nil {
			return 0, err
		}
	}
	if m.chmod {
		if err := unix.Fchmod(fd, m.perm); err != nil {
			return 0, err
		}
	}
	unsupported := 0
	for _, x := range m.xattrs {
		if err := unix.Fsetxattr(fd, x[0], []byte(x[1]), 0); err != nil {
			if err == unix.ENOTSUP || err == unix.EOPNOTSUPP {
				unsupported++
				continue
			}
			return unsupported, fmt.Errorf("xattr %q: %w", x[0], err)
		}
	}
	return unsupported, nil
}

// meta plans and applies metadata on an open file or directory.
func (u *Unpacker) meta(fd int, h *tar.Header, perm uint32, force bool) error {
	m := u.plan(h, perm, force)
	n, err := m.apply(fd)
	u.stats.XattrsDropped += n
	return err
}

func times(h *tar.Header) [2]unix.Timespec {
	m := h.ModTime
	a := h.AccessTime
	if a.IsZero() {
		a = m
	}
	return [2]unix.Timespec{ts(a), ts(m)}
}

func ts(t time.Time) unix.Timespec {
	if t.IsZero() {
		return unix.Timespec{}
	}
	return unix.NsecToTimespec(t.UnixNano())
}

// futimens sets an open file's times (utimensat with a NULL path).
func futimens(fd int, ts [2]unix.Timespec) error {
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// readUmask reads the process's umask without changing it (umask(2)
// would, for every thread, for a moment). When it cannot be read, every
// mode is set explicitly.
func readUmask() uint32 {
	b, err := os.ReadFile("/proc/self/status")
	if err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Umask:"); ok {
				if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
					return uint32(m)
				}
			}
		}
	}
	return 0o777
}
