package image

import (
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"

	"github.com/berthrun/berth/image/layer"
)

// countReader counts what is read through it, stops past max and reports
// progress.
type countReader struct {
	r        io.Reader
	n        atomic.Int64
	max      int64
	total    int64
	progress func(ImportProgress)
	last     time.Time
	// aside is set when another goroutine reads (a Readahead): the
	// importing goroutine reports progress (reportReader).
	aside bool
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.n.Add(int64(n)) > c.max {
		return n, fmt.Errorf("archive larger than %d bytes: %w", c.max, errdefs.ErrResourceExhausted)
	}
	if !c.aside {
		c.report(false)
	}
	return n, err
}

// report calls progress, at most every 100 ms unless final.
func (c *countReader) report(final bool) {
	if c.progress == nil {
		return
	}
	if now := time.Now(); final || now.Sub(c.last) >= 100*time.Millisecond {
		c.last = now
		c.progress(ImportProgress{Read: c.n.Load(), Total: c.total})
	}
}

// reportReader reports the progress of c as r, which reads from c in
// another goroutine, is read.
type reportReader struct {
	r io.Reader
	c *countReader
}

func (r *reportReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.c.report(false)
	return n, err
}

// ratioReader bounds a compressed archive's decompressed stream.
type ratioReader struct {
	r     io.Reader
	raw   *countReader
	n     int64
	max   int64
	ratio int64
}

func (r *ratioReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n += int64(n)
	if r.n > r.max {
		return n, fmt.Errorf("archive decompresses to more than %d bytes: %w", r.max, errdefs.ErrResourceExhausted)
	}
	if r.n > layer.RatioGrace && r.n/r.ratio > r.raw.n.Load() {
		return n, fmt.Errorf("archive decompresses more than %d times its size: %w", r.ratio, errdefs.ErrResourceExhausted)
	}
	return n, err
}
