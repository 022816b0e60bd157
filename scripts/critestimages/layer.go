package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	_ "crypto/sha256" // go-digest's SHA-256
	"debug/elf"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// epoch is every entry's modification time: builds are reproducible.
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// layer is a tar being written in memory; entries are absolute paths in
// the image, their parent directories made as needed (root's, 0755).
type layer struct {
	buf  bytes.Buffer
	tw   *tar.Writer
	seen map[string]bool
	mode map[string]int64 // of the regular files, for hard links to them
}

func newLayer() *layer {
	l := &layer{seen: map[string]bool{}, mode: map[string]int64{}}
	l.tw = tar.NewWriter(&l.buf)
	return l
}

func (l *layer) header(h *tar.Header) error {
	name := strings.TrimPrefix(path.Clean(h.Name), "/")
	if l.seen[name] {
		return fmt.Errorf("%s twice in a layer", h.Name)
	}
	if parent := path.Dir("/" + name); parent != "/" && !l.seen[strings.TrimPrefix(parent, "/")] {
		if err := l.dir(parent, 0o755, 0, 0); err != nil {
			return err
		}
	}
	l.seen[name] = true
	if h.Typeflag == tar.TypeReg {
		l.mode[name] = h.Mode
	}
	h.Name = name
	if h.Typeflag == tar.TypeDir {
		h.Name += "/"
	}
	h.ModTime = epoch
	h.Format = tar.FormatPAX
	return l.tw.WriteHeader(h)
}

func (l *layer) dir(p string, mode int64, uid, gid int) error {
	return l.header(&tar.Header{Typeflag: tar.TypeDir, Name: p, Mode: mode, Uid: uid, Gid: gid})
}

func (l *layer) file(p string, mode int64, data []byte) error {
	if err := l.header(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode, Size: int64(len(data))}); err != nil {
		return err
	}
	_, err := l.tw.Write(data)
	return err
}

// hostFile copies the host's file at src (links followed) to p, with its
// permission bits.
func (l *layer) hostFile(p, src string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return l.file(p, int64(fi.Mode().Perm()), data)
}

// link is a hard link p to target, a file earlier in the layer. The entry
// carries the file's mode, as Docker writes it: containerd applies a hard
// link's mode to the inode it shares.
func (l *layer) link(p, target string) error {
	target = strings.TrimPrefix(target, "/")
	mode, ok := l.mode[target]
	if !ok {
		return fmt.Errorf("hard link %s to %s, no file earlier in the layer", p, target)
	}
	return l.header(&tar.Header{Typeflag: tar.TypeLink, Name: p, Linkname: target, Mode: mode})
}

func (l *layer) symlink(p, target string) error {
	return l.header(&tar.Header{Typeflag: tar.TypeSymlink, Name: p, Linkname: target, Mode: 0o777})
}

// blob is a finished layer: gzip-compressed, with the digests a manifest
// and a configuration name it by.
type blob struct {
	data   []byte
	digest digest.Digest // of data
	diffID digest.Digest // of the tar
}

func (l *layer) close() (*blob, error) {
	if err := l.tw.Close(); err != nil {
		return nil, err
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz) // no name, no time: the same tar compresses the same
	if _, err := zw.Write(l.buf.Bytes()); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return &blob{data: gz.Bytes(), digest: digest.FromBytes(gz.Bytes()), diffID: digest.FromBytes(l.buf.Bytes())}, nil
}

// libDirs are where the host's dynamic loader looks on Debian (amd64).
var libDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

// sharedObjects returns what the dynamic ELF binaries need to run, as
// ldd would list it: the dynamic loader (PT_INTERP) and every library
// named by DT_NEEDED, recursively, each as the path where the host's
// loader finds it (which the image keeps).
func sharedObjects(bins ...string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	queue := append([]string(nil), bins...)
	for len(queue) > 0 {
		bin := queue[0]
		queue = queue[1:]
		f, err := elf.Open(bin)
		if err != nil {
			return nil, err
		}
		for _, p := range f.Progs {
			if p.Type != elf.PT_INTERP {
				continue
			}
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				f.Close()
				return nil, fmt.Errorf("%s: interpreter: %w", bin, err)
			}
			if interp := strings.TrimRight(string(b), "\x00"); !seen[interp] {
				seen[interp] = true
				out = append(out, interp)
			}
		}
		libs, err := f.ImportedLibraries()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", bin, err)
		}
		for _, soname := range libs {
			found := ""
			for _, d := range libDirs {
				if _, err := os.Stat(filepath.Join(d, soname)); err == nil {
					found = filepath.Join(d, soname)
					break
				}
			}
			if found == "" {
				return nil, fmt.Errorf("%s needs %s, which is in none of %v", bin, soname, libDirs)
			}
			if !seen[found] {
				seen[found] = true
				out = append(out, found)
				queue = append(queue, found)
			}
		}
	}
	return out, nil
}

// static reports whether the ELF binary has no dynamic loader.
func static(bin string) (bool, error) {
	f, err := elf.Open(bin)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}
