// Package crilog writes a container's output in the Kubernetes CRI log
// format (k8s.io/cri-api; the kubelet reads it back in
// pkg/kubelet/kuberuntime/logs): one record a line,
//
//	2016-10-06T00:17:09.669794202Z stdout F hello
//
// the time the line was read (RFC 3339 with nanoseconds, UTC), the stream
// (stdout or stderr), a tag and the line's bytes as the container wrote
// them, without its LF (and the CR of a CRLF). The tag is F for a whole
// line and P for a piece of one: a line longer than MaxLine is written as P
// records of MaxLine bytes then an F record with the rest, and output that
// ends without a newline when its stream closes is a last P record, as
// containerd's CRI plugin does (pkg/cri/io/logger.go).
//
// Whatever the container writes, memory stays bounded (MaxLine bytes held
// a stream), the bytes are kept as they are (invalid UTF-8, NUL, a CR
// within a line), records of the two streams never mix within a line, and
// a file that cannot be written (a full disk, an I/O error) never fails
// nor blocks the writes of the container's output: the records are
// dropped and the failure reported once.
package crilog

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/errclass"
)

// The streams and tags of the format.
const (
	Stdout     = "stdout"
	Stderr     = "stderr"
	TagFull    = "F"
	TagPartial = "P"
)

// MaxLine is the most bytes of a line one record holds: containerd's
// default (max_container_log_line_size, 16 KiB). Longer lines are split.
const MaxLine = 16 << 10

// flushSize is how many bytes of records are gathered before they are
// written: the records of one write of the container's output go to the
// file in one write(2) (a stream of short lines would otherwise cost a
// system call a line), never more than this plus one record.
const flushSize = 64 << 10

// Writer writes the records of a container's streams to one file (or
// writer). It is safe for concurrent use: each Stream is written by its
// own copy, and a record is written whole, never mixed with another.
type Writer struct {
	mu      sync.Mutex
	out     io.Writer // nil once closed
	file    *os.File  // out, when Open opened it
	path    string
	maxLine int
	now     func() time.Time
	last    time.Time
	report  func(error)
	// failing is set from a failed write to the next that succeeds: a
	// failure is reported once. cut is set when a write stopped within
	// a record, which the next write ends with a LF first.
	failing, cut bool
	buf          []byte // records not written yet
}

// New returns a Writer of records into out. report (nil: none) is called
// with the first error of each run of failed writes.
func New(out io.Writer, report func(error)) *Writer {
	if report == nil {
		report = func(error) {}
	}
	return &Writer{out: out, maxLine: MaxLine, now: time.Now, report: report}
}

// Open returns a Writer appending to the file at path (see OpenFile), which
// Reopen replaces.
func Open(path string, report func(error)) (*Writer, error) {
	f, err := OpenFile(path)
	if err != nil {
		return nil, err
	}
	w := New(f, report)
	w.file, w.path = f, path
	return w, nil
}

// Path is the file's path; empty for a Writer made by New.
func (w *Writer) Path() string { return w.path }

// Reopen closes the file and opens the path again (OpenFile), creating a
// new file when the old one was moved away (the kubelet renames a log to
// rotate it, then asks for this). The records written so far are in the
// old file, the next ones go to the new one. When the path cannot be
// opened, the error is returned and the records go on to the old file.
func (w *Writer) Reopen() error {
	if w.path == "" {
		return fmt.Errorf("CRI log: not a file: %w", errdefs.ErrFailedPrecondition)
	}
	f, err := OpenFile(w.path)
	if err != nil {
		return err
	}
	w.mu.Lock()
	if w.out == nil {
		w.mu.Unlock()
		f.Close()
		return fmt.Errorf("CRI log %s: closed: %w", w.path, errdefs.ErrFailedPrecondition)
	}
	old := w.file
	w.file, w.out = f, f
	w.failing, w.cut = false, false
	w.mu.Unlock()
	return old.Close()
}

// Close closes the file; what the streams write afterwards is dropped.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.out = nil
	if w.file == nil {
		return nil
	}
	err := w.file.Close()
	w.file = nil
	return err
}

// record adds one record to the buffer, written once it is large enough
// (and at the end of each Stream write). Its time never goes back, even
// when the clock does.
func (w *Writer) record(stream, tag string, content []byte) {
	t := w.now().UTC()
	if t.Before(w.last) {
		t = w.last
	}
	w.last = t
	w.buf = t.AppendFormat(w.buf, time.RFC3339Nano)
	w.buf = append(w.buf, ' ')
	w.buf = append(w.buf, stream...)
	w.buf = append(w.buf, ' ')
	w.buf = append(w.buf, tag...)
	w.buf = append(w.buf, ' ')
	w.buf = append(w.buf, content...)
	w.buf = append(w.buf, '\n')
	if len(w.buf) >= flushSize {
		w.flush()
	}
}

// flush writes the buffered records, in one write. A failure drops them:
// the container's output is never held up by its CRI log.
func (w *Writer) flush() {
	b := w.buf
	w.buf = w.buf[:0]
	if len(b) == 0 || w.out == nil {
		return
	}
	var err error
	if w.cut {
		// The last write stopped within a record: end that line, so
		// that the next record is a line of its own (the reader skips
		// the broken one).
		if _, err = w.out.Write([]byte{'\n'}); err == nil {
			w.cut = false
		}
	}
	if err == nil {
		var n int
		n, err = w.out.Write(b)
		if err == nil && n < len(b) {
			err = io.ErrShortWrite
		}
		if n > 0 {
			w.cut = b[n-1] != '\n'
		}
	}
	if err != nil {
		if !w.failing {
			w.failing = true
			w.report(fmt.Errorf("CRI log %s: %w (its records are dropped until a write succeeds)", w.path, err))
		}
		return
	}
	w.failing = false
}

// Stream returns the writer of one stream's output (Stdout or Stderr) into
// the records. Each stream must have one Stream.
func (w *Writer) Stream(name string) *Stream {
	return &Stream{w: w, name: name}
}

// Stream turns one stream's output into records. Its Write never fails.
type Stream struct {
	w    *Writer
	name string
	// line is the line being read, up to MaxLine+1 bytes: one more
	// than a record holds when it is a CR, which the next byte, a LF,
	// may make the end of the line.
	line   []byte
	closed bool
}

// Write writes a record for every line p ends and keeps the start of the
// next, splitting lines longer than MaxLine. It always takes all of p.
func (s *Stream) Write(p []byte) (int, error) {
	w := s.w
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	if s.closed {
		return n, nil
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.add(p)
			break
		}
		s.add(p[:i])
		s.endLine()
		p = p[i+1:]
	}
	w.flush()
	return n, nil
}

// add adds seg, which holds no LF, to the line, writing a P record of
// MaxLine bytes whenever the line grows past it.
func (s *Stream) add(seg []byte) {
	max := s.w.maxLine
	for len(seg) > 0 {
		if len(s.line) == 0 && len(seg) > max+1 {
			// A byte follows the cut, and it is not a LF: the
			// piece is partial, written without a copy.
			s.w.record(s.name, TagPartial, seg[:max])
			seg = seg[max:]
			continue
		}
		if s.line == nil {
			s.line = make([]byte, 0, max+1)
		}
		k := min(max+1-len(s.line), len(seg))
		s.line = append(s.line, seg[:k]...)
		seg = seg[k:]
		if len(s.line) == max+1 && (len(seg) > 0 || s.line[max] != '\r') {
			s.w.record(s.name, TagPartial, s.line[:max])
			s.line[0] = s.line[max]
			s.line = s.line[:1]
		}
	}
}

// endLine writes the line a LF ended as an F record, without the CR of a
// CRLF.
func (s *Stream) endLine() {
	line := s.line
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	s.w.record(s.name, TagFull, line)
	s.line = s.line[:0]
}

// Close writes what the stream left without a newline as a P record. The
// Writer stays open for the other stream.
func (s *Stream) Close() error {
	w := s.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for len(s.line) > 0 {
		k := min(len(s.line), w.maxLine)
		w.record(s.name, TagPartial, s.line[:k])
		s.line = s.line[k:]
	}
	s.line = nil
	w.flush()
	return nil
}

// OpenFile opens the CRI log at path for appending, creating it (mode 0640,
// as containerd does) if it does not exist. The path's directory must
// exist. Whatever lies at its last component is never followed nor opened
// unless it is a regular file of one link: a symbolic link, a FIFO (which
// would block), a socket, a device node or a hard link to another file
// planted there is refused with failed-precondition, without blocking.
func OpenFile(path string) (*os.File, error) {
	dir, base := filepath.Split(path)
	if !filepath.IsAbs(path) || base == "" || base == "." || base == ".." {
		return nil, fmt.Errorf("CRI log %q: not an absolute path to a file: %w", path, errdefs.ErrInvalidArgument)
	}
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("CRI log %s: directory: %w", path, errclass.OS(&os.PathError{Op: "open", Path: dir, Err: err}))
	}
	defer unix.Close(dfd)
	// A file made here is new and regular; one that exists is looked
	// at through an O_PATH descriptor (which opens nothing: no FIFO
	// blocks, no device is touched) and opened for writing only
	// through that descriptor, so a swap after the check reaches
	// nothing else.
	for range 8 {
		fd, err := unix.Openat(dfd, base, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o640)
		if err == nil {
			return os.NewFile(uintptr(fd), path), nil
		}
		if err != unix.EEXIST {
			return nil, fmt.Errorf("CRI log: %w", errclass.OS(&os.PathError{Op: "create", Path: path, Err: err}))
		}
		f, err := openExisting(dfd, base, path)
		if err == unix.ENOENT {
			continue // removed meanwhile: create it
		}
		return f, err
	}
	return nil, fmt.Errorf("CRI log %s: the file keeps changing: %w", path, errdefs.ErrUnavailable)
}

// openExisting opens the file base of dfd for appending if it is a regular
// file of one link; unix.ENOENT when it is gone.
func openExisting(dfd int, base, path string) (*os.File, error) {
	pfd, err := unix.Openat(dfd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("CRI log: %w", errclass.OS(&os.PathError{Op: "open", Path: path, Err: err}))
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return nil, fmt.Errorf("CRI log %s: %w", path, errclass.OS(err))
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("CRI log %s: %s, not a regular file: %w", path, fileType(st.Mode), errdefs.ErrFailedPrecondition)
	}
	if st.Nlink > 1 {
		return nil, fmt.Errorf("CRI log %s: a file of %d links (another file's hard link?): %w", path, st.Nlink, errdefs.ErrFailedPrecondition)
	}
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(pfd), unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("CRI log: %w", errclass.OS(&os.PathError{Op: "open", Path: path, Err: err}))
	}
	return os.NewFile(uintptr(fd), path), nil
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFLNK:
		return "a symbolic link"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFDIR:
		return "a directory"
	}
	return "not a regular file"
}
