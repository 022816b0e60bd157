// Package logfile keeps a container's output in a size-capped log with
// rotation, as Docker's json-file driver does with max-size and max-file:
// the current file PATH and rotated ones PATH.1 (the newest) to
// PATH.<files-1>. However fast a container writes, the log never holds more
// than MaxSize*MaxFiles bytes on disk.
package logfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Defaults of Limits, those of a Docker daemon with max-size=10m, max-file=2.
const (
	DefaultMaxSize  = 10 << 20
	DefaultMaxFiles = 2
)

// Limits cap a log.
type Limits struct {
	// MaxSize is the most bytes one file holds (> 0).
	MaxSize int64
	// MaxFiles is how many files the log spans, the current one included
	// (>= 1). With 1 the file is emptied when full.
	MaxFiles int
}

// OrDefault fills the zero fields with the defaults.
func (l Limits) OrDefault() Limits {
	if l.MaxSize == 0 {
		l.MaxSize = DefaultMaxSize
	}
	if l.MaxFiles == 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	return l
}

// Writer appends to a capped log. It is safe for concurrent use; each Write
// goes to the log whole, though a Write larger than the space left in the
// current file is split across a rotation.
type Writer struct {
	mu     sync.Mutex
	path   string
	limits Limits
	f      *os.File
	size   int64
}

// Create opens the log at path for appending, creating it (mode 0600).
func Create(path string, l Limits) (*Writer, error) {
	l = l.OrDefault()
	if l.MaxSize <= 0 || l.MaxFiles < 1 {
		return nil, fmt.Errorf("log limits %d bytes x %d files", l.MaxSize, l.MaxFiles)
	}
	w := &Writer{path: path, limits: l}
	// Rotated files beyond the limits (left by a writer with more files)
	// go, so the log never holds more than MaxSize*MaxFiles.
	names, err := Files(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, n := range names {
		if i, err := strconv.Atoi(strings.TrimPrefix(n, path+".")); err == nil && i >= l.MaxFiles {
			if err := os.Remove(n); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, err
			}
		}
	}
	if err := w.open(os.O_APPEND); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Writer) open(flag int) error {
	f, err := os.OpenFile(w.path, os.O_CREATE|os.O_WRONLY|flag, 0o600)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	w.f, w.size = f, fi.Size()
	return nil
}

// Write appends p, rotating first whenever the current file would grow
// beyond MaxSize.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return 0, os.ErrClosed
	}
	written := 0
	for len(p) > 0 {
		if w.size >= w.limits.MaxSize {
			if err := w.rotate(); err != nil {
				return written, err
			}
		}
		chunk := p[:min(int64(len(p)), w.limits.MaxSize-w.size)]
		n, err := w.f.Write(chunk)
		written += n
		w.size += int64(n)
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// rotate moves PATH.i to PATH.i+1 (the oldest is replaced) and PATH to
// PATH.1, then starts an empty PATH; with one file, PATH is emptied.
func (w *Writer) rotate() error {
	w.f.Close()
	w.f = nil
	if w.limits.MaxFiles > 1 {
		for i := w.limits.MaxFiles - 2; i >= 1; i-- {
			if err := os.Rename(rotated(w.path, i), rotated(w.path, i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		if err := os.Rename(w.path, rotated(w.path, 1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return w.open(os.O_TRUNC)
}

// Close closes the current file.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}

func rotated(path string, i int) string { return path + "." + strconv.Itoa(i) }

// Files lists the log's files that exist, oldest first (the current file
// last).
func Files(path string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	base := filepath.Base(path)
	var nums []int
	current := false
	for _, e := range ents {
		if e.Name() == base {
			current = true
			continue
		}
		s, ok := strings.CutPrefix(e.Name(), base+".")
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(s); err == nil && n > 0 && strconv.Itoa(n) == s {
			nums = append(nums, n)
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(nums)))
	var out []string
	for _, n := range nums {
		out = append(out, rotated(path, n))
	}
	if current {
		out = append(out, path)
	}
	return out, nil
}

// Open returns the whole log, oldest output first. The files are opened at
// once: a rotation while it is read loses nothing already opened. It is
// os.ErrNotExist when no file of the log exists.
func Open(path string) (io.ReadCloser, error) {
	names, err := Files(path)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s: %w", path, os.ErrNotExist)
	}
	var files multiFile
	for _, n := range names {
		f, err := os.Open(n)
		if errors.Is(err, os.ErrNotExist) {
			continue // rotated away meanwhile
		}
		if err != nil {
			files.Close()
			return nil, err
		}
		files = append(files, f)
	}
	readers := make([]io.Reader, len(files))
	for i, f := range files {
		readers[i] = f
	}
	return &multiReader{Reader: io.MultiReader(readers...), files: files}, nil
}

type multiFile []*os.File

func (m multiFile) Close() error {
	for _, f := range m {
		f.Close()
	}
	return nil
}

type multiReader struct {
	io.Reader
	files multiFile
}

func (m *multiReader) Close() error { return m.files.Close() }
