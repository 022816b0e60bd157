package unpack

import (
	"archive/tar"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/image/layer"
)

func (u *Unpacker) rootEntry(h *tar.Header) error {
	m := u.plan(h, u.perm(h, true), true)
	n, err := m.apply(u.root)
	u.stats.XattrsDropped += n
	if err != nil {
		return entryErr(h.Name, "", err)
	}
	u.dirTimes["."] = times(h)
	if u.rec != nil {
		return u.rec.dir(".", m, times(h), false)
	}
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
			if u.rec != nil {
				u.rec.upper = false // replaced an entry of its own
			}
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
	m := u.plan(h, perm, existed)
	n, err := m.apply(fd)
	u.stats.XattrsDropped += n
	if err != nil {
		return err
	}
	if u.rec != nil {
		// A directory there already, and not named before (a name
		// given twice is seen by entry): one this layer made for an
		// entry under it, before naming it.
		_, named := u.created[name]
		late := existed && !named
		m.chmod = true // over a lower layer's directory, as Apply does
		if err := u.rec.dir(name, m, times(h), late); err != nil {
			return err
		}
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
