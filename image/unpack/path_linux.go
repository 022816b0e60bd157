package unpack

import (
	"io"
	"os"
	"path"

	"golang.org/x/sys/unix"
)

// resolveFlags confine every lookup to the root and refuse symlinks and
// mount crossings on the way.
const resolveFlags = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

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
	if u.rec != nil {
		u.rec.upper = false // replaces an entry of its own
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
