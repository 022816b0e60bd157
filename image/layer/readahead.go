package layer

import (
	"io"
	"sync"
)

// Readahead reads r in a goroutine of its own, a few chunks ahead of its
// reader: a decompressor then runs beside what consumes its output (a tar
// parser, an unpacker) instead of in turns with it, as pgzip does. Close
// stops the goroutine and waits for it; it does not close r.
type Readahead struct {
	data chan raChunk
	free chan []byte
	stop chan struct{}
	done chan struct{}
	once sync.Once

	cur []byte
	off int
	err error
}

type raChunk struct {
	b   []byte
	err error
}

// Readahead's chunks: 4 of 256 KiB.
const (
	raChunkSize = 256 << 10
	raChunks    = 4
)

// NewReadahead starts reading r ahead.
func NewReadahead(r io.Reader) *Readahead {
	ra := &Readahead{data: make(chan raChunk, raChunks), free: make(chan []byte, raChunks),
		stop: make(chan struct{}), done: make(chan struct{})}
	for range raChunks {
		ra.free <- make([]byte, raChunkSize)
	}
	go ra.run(r)
	return ra
}

func (ra *Readahead) run(r io.Reader) {
	defer close(ra.done)
	for {
		var buf []byte
		select {
		case buf = <-ra.free:
		case <-ra.stop:
			return
		}
		n, err := io.ReadFull(r, buf)
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
		select {
		case ra.data <- raChunk{buf[:n], err}:
		case <-ra.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

// Read reads what the goroutine read, and its error at the end.
func (ra *Readahead) Read(p []byte) (int, error) {
	for ra.off >= len(ra.cur) {
		if ra.err != nil {
			return 0, ra.err
		}
		if ra.cur != nil {
			ra.free <- ra.cur[:cap(ra.cur)]
			ra.cur = nil
		}
		c := <-ra.data
		ra.cur, ra.off, ra.err = c.b, 0, c.err
	}
	n := copy(p, ra.cur[ra.off:])
	ra.off += n
	return n, nil
}

// Close stops the reads ahead and waits for the goroutine to end (its
// read under way, if any, first).
func (ra *Readahead) Close() error {
	ra.once.Do(func() { close(ra.stop) })
	<-ra.done
	return nil
}
