package unpack

import (
	"fmt"
	"io"
	"sync"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

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
