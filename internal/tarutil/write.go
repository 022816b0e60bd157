package tarutil

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Options tune WriteDir.
type Options struct {
	// ModTime, when set, stamps every entry, for archives whose bytes
	// depend on the content only.
	ModTime time.Time
}

// WriteDir writes the tree under dir to w as a tar archive with names
// relative to dir ("./etc/passwd" style without the dot), keeping owners,
// modes, times, symlinks, hard links (as links) and device nodes. Sockets
// are skipped. The walk never follows symlinks, and files are opened
// beneath dir without following any link and without blocking, so
// nothing outside dir is read even if the tree changes meanwhile.
func WriteDir(w io.Writer, dir string, opts ...Options) error {
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	root, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	dw := &dirWriter{tw: tar.NewWriter(w), root: root, opts: o, seen: map[inode]string{}}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || rel == "." {
			return err
		}
		if err := dw.add(path, rel, d); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return dw.tw.Close()
}

type inode struct{ dev, ino uint64 }

// dirWriter writes one tree's entries.
type dirWriter struct {
	tw   *tar.Writer
	root *os.File // the tree's top, files are opened beneath it
	opts Options
	seen map[inode]string // the first name of each hard-linked file
}

// add writes the entry at path (rel under the tree's top).
func (dw *dirWriter) add(path, rel string, d fs.DirEntry) error {
	fi, err := d.Info()
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSocket != 0 {
		return nil
	}
	h, err := dw.header(path, rel, fi)
	if err != nil {
		return err
	}
	if err := dw.tw.WriteHeader(h); err != nil {
		return err
	}
	if h.Typeflag != tar.TypeReg {
		return nil
	}
	f, err := openBeneath(int(dw.root.Fd()), rel)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.CopyN(dw.tw, f, h.Size)
	return err
}

// header is the tar header of fi: owners by number, no access or change
// times, a second name of a hard-linked file as a link to the first.
func (dw *dirWriter) header(path, rel string, fi fs.FileInfo) (*tar.Header, error) {
	link := ""
	if fi.Mode()&fs.ModeSymlink != 0 {
		var err error
		if link, err = os.Readlink(path); err != nil {
			return nil, err
		}
	}
	h, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return nil, err
	}
	h.Name = filepath.ToSlash(rel)
	if fi.IsDir() {
		h.Name += "/"
	}
	h.Format = tar.FormatPAX
	h.Uname, h.Gname = "", ""
	h.AccessTime, h.ChangeTime = time.Time{}, time.Time{}
	if !dw.opts.ModTime.IsZero() {
		h.ModTime = dw.opts.ModTime
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		h.Uid, h.Gid = int(st.Uid), int(st.Gid)
		if fi.Mode().IsRegular() && st.Nlink > 1 {
			key := inode{uint64(st.Dev), st.Ino}
			if first, ok := dw.seen[key]; ok {
				h.Typeflag, h.Linkname, h.Size = tar.TypeLink, first, 0
			} else {
				dw.seen[key] = h.Name
			}
		}
	}
	return h, nil
}
