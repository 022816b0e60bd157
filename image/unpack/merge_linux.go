package unpack

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// dirRecord is a directory a layer names: the metadata its entry sets
// (the last one, were there several), its times, and whether the layer
// named it only after entries under it (late).
type dirRecord struct {
	plan  metaPlan
	times [2]unix.Timespec
	late  bool
}

// recorder collects what Merge needs of the layer a LayerUnpacker unpacks.
type recorder struct {
	dirs      map[string]dirRecord
	whiteouts []whiteoutRecord
	upper     bool
	bytes     int
}

func (r *recorder) grow(n int) error {
	if r.bytes += n; r.bytes > maxRecordBytes {
		return fmt.Errorf("more than %d bytes of directories and whiteouts to record: %w", maxRecordBytes, errdefs.ErrResourceExhausted)
	}
	return nil
}

func (r *recorder) dir(name string, m metaPlan, ts [2]unix.Timespec, late bool) error {
	if _, ok := r.dirs[name]; ok {
		r.upper = false // named twice
	} else {
		n := len(name) + 96
		for _, x := range m.xattrs {
			n += len(x[0]) + len(x[1]) + 32
		}
		if err := r.grow(n); err != nil {
			return err
		}
	}
	r.dirs[name] = dirRecord{plan: m, times: ts, late: late}
	return nil
}

func (r *recorder) whiteout(dir, target string, opaque bool, kept []string) error {
	n := len(dir) + len(target) + 64
	for _, k := range kept {
		n += len(k) + 16
	}
	if err := r.grow(n); err != nil {
		return err
	}
	r.whiteouts = append(r.whiteouts, whiteoutRecord{dir: dir, target: target, opaque: opaque, kept: kept})
	return nil
}

// LayerUnpacker unpacks a single layer, entry by entry, into an empty
// directory, as Apply would unpack an image's bottom layer, and records
// what Merge needs to lay the result over other layers later: so that a
// layer can be unpacked as it streams in, before its place among an
// image's layers is known.
type LayerUnpacker struct {
	u   *Unpacker
	dir string
}

// NewLayer opens a LayerUnpacker on dir, an existing empty directory.
func NewLayer(dir string, opts Options) (*LayerUnpacker, error) {
	u, err := New(dir, opts)
	if err != nil {
		return nil, err
	}
	u.rec = &recorder{dirs: map[string]dirRecord{}, upper: true}
	u.begin()
	return &LayerUnpacker{u: u, dir: dir}, nil
}

// Entry applies the layer's next entry, its content read from r, as Apply
// applies each entry of a stream (the same checks and policy).
func (lu *LayerUnpacker) Entry(h *tar.Header, r io.Reader) error {
	if lu.u.root < 0 {
		return fmt.Errorf("layer unpacker closed: %w", errdefs.ErrFailedPrecondition)
	}
	return lu.u.next(h, r)
}

// Finish waits for the files being written, sets the directories' times
// and returns the layer. The LayerUnpacker is closed.
func (lu *LayerUnpacker) Finish() (*Layer, error) {
	u := lu.u
	if u.root < 0 {
		return nil, fmt.Errorf("layer unpacker closed: %w", errdefs.ErrFailedPrecondition)
	}
	if err := u.Close(); err != nil {
		return nil, err
	}
	return &Layer{dir: lu.dir, opts: u.opts, dirs: u.rec.dirs, whiteouts: u.rec.whiteouts, stats: u.stats,
		upper: u.rec.upper, bytes: u.rec.bytes}, nil
}

// Close abandons the layer (what was written stays in its directory).
func (lu *LayerUnpacker) Close() error {
	if lu.u.root < 0 {
		return nil
	}
	return lu.u.Close()
}

// Merge lays l over what the unpacker's root holds, giving the tree that
// applying the layer's stream with Apply would give, by moving l's files
// into place: l's directory is consumed (what stays in it is to be
// removed). Whiteouts remove what they hide first; then every entry of
// l's tree that the root lacks is moved in whole, a directory the root
// has too is merged into it (taking the metadata the layer gives it), and
// anything else replaces what the root has.
//
// Before it changes anything Merge checks that moving gives what applying
// would, and returns ErrMergeConflict (having changed nothing) when it
// cannot tell: the layer's entries hid or replaced each other, a
// directory of the layer meets a non-directory of the root (applying the
// stream would have refused to write through it, or replaced it first),
// a whiteout's directory cannot be reached without a symlink, a merged
// directory has its setgid bit or a default ACL (files created in it
// would inherit them). Into an empty root any layer moves as it is. A
// failure after the check leaves the root half-merged: the caller drops
// the tree.
func (u *Unpacker) Merge(ctx context.Context, l *Layer) error {
	if u.root < 0 {
		return fmt.Errorf("unpacker closed: %w", errdefs.ErrFailedPrecondition)
	}
	if l.used {
		return fmt.Errorf("layer %s was merged already: %w", l.dir, errdefs.ErrFailedPrecondition)
	}
	if l.opts.AllowDevices != u.opts.AllowDevices || l.opts.AllowSetid != u.opts.AllowSetid {
		return ErrMergeConflict
	}
	if err := u.flush(); err != nil {
		return err
	}
	u.drop()
	sfd, err := unix.Open(l.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("layer directory %s: %w", l.dir, classify(err))
	}
	defer unix.Close(sfd)
	empty, err := dirEmpty(u.root)
	if err != nil {
		return classify(err)
	}
	if !empty && !l.upper {
		return ErrMergeConflict
	}
	m := &merger{u: u, l: l, ctx: ctx}
	if !empty {
		m.dry = true
		if err := m.whiteouts(); err != nil {
			return err
		}
		if err := m.dir(sfd, u.root, "."); err != nil {
			return err
		}
		m.dry = false
	}
	l.used = true
	if !empty {
		if err := m.whiteouts(); err != nil {
			return err
		}
	}
	if err := m.dir(sfd, u.root, "."); err != nil {
		return err
	}
	u.invalidate()
	for name, d := range l.dirs {
		if _, ok := u.dirTimes[name]; !ok {
			if u.nameBytes += len(name); u.nameBytes > maxNameBytes {
				return fmt.Errorf("more than %d bytes of names to keep: %w", maxNameBytes, errdefs.ErrResourceExhausted)
			}
		}
		u.dirTimes[name] = d.times
	}
	u.stats.Entries += l.stats.Entries
	u.stats.DevicesDropped += l.stats.DevicesDropped
	u.stats.SetidCleared += l.stats.SetidCleared
	u.stats.XattrsDropped += l.stats.XattrsDropped
	return nil
}

// merger is one Merge: a dry run that only checks, then the moves.
type merger struct {
	u     *Unpacker
	l     *Layer
	ctx   context.Context
	dry   bool
	moved int
}

// conflict is ErrMergeConflict in the dry run; after it, a condition the
// dry run ruled out is an internal error.
func (m *merger) conflict(what string) error {
	if m.dry {
		return ErrMergeConflict
	}
	return fmt.Errorf("merging layer %s: %s after the check: %w", m.l.dir, what, errdefs.ErrInternal)
}

// whiteouts removes from the root what the layer's whiteouts hide.
func (m *merger) whiteouts() error {
	for _, w := range m.l.whiteouts {
		fd, err := m.u.open(w.dir, unix.O_RDONLY|unix.O_DIRECTORY)
		if err == unix.ENOENT {
			continue // nothing below to hide
		}
		if err != nil {
			return m.conflict("whiteout directory " + w.dir)
		}
		if m.dry {
			unix.Close(fd)
			continue
		}
		if w.opaque {
			err = removeChildren(fd, func(child string) bool {
				for _, k := range w.kept {
					if k == child {
						return true
					}
				}
				return false
			})
		} else {
			err = m.u.remove(fd, w.target)
		}
		unix.Close(fd)
		m.u.invalidate()
		if err != nil {
			return fmt.Errorf("layer whiteout in %q: %w", w.dir, classify(err))
		}
	}
	return nil
}

// dir merges the layer's directory sfd (named rel) into the root's
// directory of the same name, bfd.
func (m *merger) dir(sfd, bfd int, rel string) error {
	if m.dry {
		for _, fd := range []int{sfd, bfd} {
			inherits, err := passesOn(fd)
			if err != nil {
				return classify(err)
			}
			if inherits {
				return ErrMergeConflict
			}
		}
	} else if d, ok := m.l.dirs[rel]; ok {
		if _, err := d.plan.apply(bfd); err != nil {
			return fmt.Errorf("layer entry %q: %w", rel, classify(err))
		}
	}
	names, err := readNames(sfd)
	if err != nil {
		return classify(err)
	}
	for _, name := range names {
		if m.moved++; m.moved%256 == 0 {
			if err := m.ctx.Err(); err != nil {
				return err
			}
		}
		p := name
		if rel != "." {
			p = rel + "/" + name
		}
		var sst, bst unix.Stat_t
		if err := unix.Fstatat(sfd, name, &sst, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("layer entry %q: %w", p, classify(err))
		}
		err := unix.Fstatat(bfd, name, &bst, unix.AT_SYMLINK_NOFOLLOW)
		sdir := sst.Mode&unix.S_IFMT == unix.S_IFDIR
		bdir := bst.Mode&unix.S_IFMT == unix.S_IFDIR
		switch {
		case err == unix.ENOENT:
			if !m.dry {
				if err := unix.Renameat2(sfd, name, bfd, name, unix.RENAME_NOREPLACE); err != nil {
					return fmt.Errorf("layer entry %q: %w", p, classify(err))
				}
			}
		case err != nil:
			return fmt.Errorf("layer entry %q: %w", p, classify(err))
		case sdir && bdir:
			if err := m.sub(sfd, bfd, name, p); err != nil {
				return err
			}
		case sdir:
			if d, ok := m.l.dirs[p]; !ok || d.late {
				// Applying the stream would write through what the
				// root has there, and refuse to.
				return m.conflict("directory over a non-directory at " + p)
			}
			fallthrough
		default:
			if !m.dry {
				if err := m.u.remove(bfd, name); err != nil {
					return fmt.Errorf("layer entry %q: %w", p, classify(err))
				}
				if err := unix.Renameat2(sfd, name, bfd, name, unix.RENAME_NOREPLACE); err != nil {
					return fmt.Errorf("layer entry %q: %w", p, classify(err))
				}
			}
		}
	}
	return nil
}

// sub merges the directories named name in sfd and bfd.
func (m *merger) sub(sfd, bfd int, name, p string) error {
	s, err := unix.Openat(sfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("layer entry %q: %w", p, classify(err))
	}
	defer unix.Close(s)
	b, err := unix.Openat(bfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("layer entry %q: %w", p, classify(err))
	}
	defer unix.Close(b)
	return m.dir(s, b, p)
}

// passesOn reports whether files created in the directory fd would take
// something from it: its group (setgid) or a default ACL.
func passesOn(fd int) (bool, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, err
	}
	if st.Mode&unix.S_ISGID != 0 {
		return true, nil
	}
	_, err := unix.Fgetxattr(fd, "system.posix_acl_default", nil)
	switch err {
	case nil:
		return true, nil
	case unix.ENODATA, unix.ENOTSUP:
		return false, nil
	}
	return false, err
}

// readNames lists the directory fd, from its start.
func readNames(fd int) ([]string, error) {
	if _, err := unix.Seek(fd, 0, io.SeekStart); err != nil {
		return nil, err
	}
	dup, err := unix.Dup(fd)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), "dir")
	defer f.Close()
	return f.Readdirnames(-1)
}

// dirEmpty reports whether the directory fd is empty.
func dirEmpty(fd int) (bool, error) {
	if _, err := unix.Seek(fd, 0, io.SeekStart); err != nil {
		return false, err
	}
	dup, err := unix.Dup(fd)
	if err != nil {
		return false, err
	}
	f := os.NewFile(uintptr(dup), "dir")
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err == io.EOF {
		return true, nil
	}
	return len(names) == 0, err
}
