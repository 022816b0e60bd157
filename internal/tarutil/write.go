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
	tw := tar.NewWriter(w)
	type inode struct{ dev, ino uint64 }
	seen := map[inode]string{}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSocket != 0 {
			return nil
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		h.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			h.Name += "/"
		}
		h.Format = tar.FormatPAX
		h.Uname, h.Gname = "", ""
		h.AccessTime, h.ChangeTime = time.Time{}, time.Time{}
		if !o.ModTime.IsZero() {
			h.ModTime = o.ModTime
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			h.Uid, h.Gid = int(st.Uid), int(st.Gid)
			if fi.Mode().IsRegular() && st.Nlink > 1 {
				key := inode{uint64(st.Dev), st.Ino}
				if first, ok := seen[key]; ok {
					h.Typeflag, h.Linkname, h.Size = tar.TypeLink, first, 0
				} else {
					seen[key] = h.Name
				}
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if h.Typeflag != tar.TypeReg {
			return nil
		}
		f, err := openBeneath(int(root.Fd()), rel)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		defer f.Close()
		if _, err := io.CopyN(tw, f, h.Size); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
