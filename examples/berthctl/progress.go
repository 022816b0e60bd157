package main

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/registry"
)

// progress shows transfers as bars on the terminal: one per blob of a
// registry pull or push, one for an archive read. Its methods may be
// called from several goroutines, and on nil (no terminal: nothing shown).
type progress struct {
	p *mpb.Progress

	mu      sync.Mutex
	blobs   map[digest.Digest]*bar
	all     []*bar
	stopped bool
}

// bar is one bar, and whether it ended (completed or aborted): an ended
// bar takes no more updates.
type bar struct {
	b     *mpb.Bar
	ended bool
}

// progress returns the bars when stderr is a terminal, else nil (scripts
// and logs get no cursor movements).
func (a *app) progress() *progress {
	if _, err := unix.IoctlGetTermios(int(a.stderr.Fd()), unix.TCGETS); err != nil {
		return nil
	}
	return newProgress(mpb.WithOutput(a.stderr))
}

func newProgress(opts ...mpb.ContainerOption) *progress {
	return &progress{p: mpb.New(opts...), blobs: map[digest.Digest]*bar{}}
}

// add starts a bar named name: a bar of total bytes with the bytes done
// and the rate, or, when the total is unknown (0), the bytes and the rate
// alone. It returns nil once the bars are stopped. p.mu is held.
func (p *progress) add(name string, total int64) *bar {
	if p.stopped {
		return nil
	}
	var style mpb.BarFillerBuilder = mpb.BarStyle()
	count := decor.Counters(decor.SizeB1024(0), "% .1f / % .1f", decor.WCSyncSpace)
	if total <= 0 {
		style = mpb.NopStyle()
		count = decor.Current(decor.SizeB1024(0), "% .1f", decor.WCSyncSpace)
	}
	b := &bar{b: p.p.New(total, style,
		mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR)),
		mpb.AppendDecorators(count, rate(time.Now())))}
	p.all = append(p.all, b)
	return b
}

// rate is a bar's average rate since start, kept once the bar completed
// (decor.AverageSpeed shows none for a bar that completed between two
// frames).
func rate(start time.Time) decor.Decorator {
	var shown string
	return decor.Any(func(s decor.Statistics) string {
		if !s.Completed || shown == "" {
			perSec := float64(s.Current) / max(time.Since(start).Seconds(), 1e-3)
			shown = fmt.Sprintf("% .1f", decor.FmtAsSpeed(decor.SizeB1024(math.Round(perSec))))
		}
		return shown
	}, decor.WCSyncSpace)
}

// set moves a bar to done bytes; a bar of known total completes there.
func (b *bar) set(done, total int64) {
	b.b.SetCurrent(done)
	b.ended = total > 0 && done >= total
}

// end completes the bar where it is (ok) or aborts it, leaving it shown.
func (b *bar) end(ok bool) {
	if b.ended {
		return
	}
	b.ended = true
	if ok {
		b.b.SetTotal(-1, true)
	} else {
		b.b.Abort(false)
	}
}

// blobName is the short digest a blob's bar shows, as docker does.
func blobName(d digest.Digest) string {
	e := d.Encoded()
	if len(e) > 12 {
		e = e[:12]
	}
	return e
}

// blob follows a registry transfer: a bar per blob, completed when the
// blob is through, left where it stopped when it failed. A blob sent again
// once its bar ended (a retry) gets a new bar.
func (p *progress) blob(pr registry.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.blobs[pr.Digest]
	if b == nil || (b.ended && !pr.Finished) {
		if b = p.add(blobName(pr.Digest), pr.Size); b == nil {
			return
		}
		p.blobs[pr.Digest] = b
	}
	if b.ended {
		return
	}
	b.set(pr.Done, pr.Size)
	if pr.Finished {
		b.end(!pr.Failed)
	}
}

// onBlob is the registry client's progress callback, nil without bars.
func (p *progress) onBlob() func(registry.Progress) {
	if p == nil {
		return nil
	}
	return p.blob
}

// onRead is an import's progress callback, nil without bars: one bar
// named what, of the archive's size when known.
func (p *progress) onRead(what string) func(image.ImportProgress) {
	if p == nil {
		return nil
	}
	var b *bar
	return func(pr image.ImportProgress) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if b == nil {
			if b = p.add(what, pr.Total); b == nil {
				return
			}
		}
		if !b.ended {
			b.set(pr.Read, pr.Total)
		}
	}
}

// stop ends the bars: those still running are completed where they are
// when ok, else left as they stopped; it returns once the last frame is
// drawn. Later calls, and calls on nil, do nothing.
func (p *progress) stop(ok bool) {
	if p == nil {
		return
	}
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.stopped = true
	for _, b := range p.all {
		b.end(ok)
	}
	p.mu.Unlock()
	p.p.Wait()
}
