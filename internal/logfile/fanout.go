package logfile

import (
	"io"
	"sync"
)

// Fanout hands a container's output, as a Tee copies it, to attachments
// that join and leave while it runs. Writing never blocks: each attachment
// has a queue of its own, bounded, and an attachment that falls so far
// behind that its queue would overflow is dropped (Sub.Dropped), so a slow
// or dead attachment never holds up the container, its log, or the other
// attachments.
type Fanout struct {
	mu    sync.Mutex
	subs  map[*Sub]struct{}
	open  int
	ended bool
}

// NewFanout returns a Fanout with no streams yet.
func NewFanout() *Fanout { return &Fanout{subs: map[*Sub]struct{}{}} }

// Chunk is a piece of one stream's output.
type Chunk struct {
	Stream int
	Data   []byte
}

// Stream returns the writer of stream n (a small number the attachments
// tell the streams apart by), for the Tee to copy into (Tee.CopyAlso). Its
// Write never fails; its Close ends the stream, and the output ends once
// every stream made so far has ended.
func (f *Fanout) Stream(n int) io.WriteCloser {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.open++
	return &fanStream{f: f, n: n}
}

type fanStream struct {
	f    *Fanout
	n    int
	once sync.Once
}

func (s *fanStream) Write(p []byte) (int, error) {
	s.f.write(s.n, p)
	return len(p), nil
}

func (s *fanStream) Close() error {
	s.once.Do(func() {
		f := s.f
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.open--; f.open == 0 {
			f.end()
		}
	})
	return nil
}

// End ends the output, whatever streams are still open (none was made,
// or the process that wrote them is gone).
func (f *Fanout) End() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.end()
}

func (f *Fanout) end() {
	if f.ended {
		return
	}
	f.ended = true
	for s := range f.subs {
		s.mu.Lock()
		s.ended = true
		s.mu.Unlock()
		s.wake()
	}
}

func (f *Fanout) write(n int, p []byte) {
	if len(p) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.subs) == 0 {
		return
	}
	// One copy for every attachment: nobody changes it.
	b := append([]byte(nil), p...)
	for s := range f.subs {
		if !s.push(n, b) {
			delete(f.subs, s)
		}
	}
}

// Join adds an attachment that gets the output written from now on, at
// most max bytes of it waiting in its queue; false when the output has
// ended already.
func (f *Fanout) Join(max int) (*Sub, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ended {
		return nil, false
	}
	s := &Sub{f: f, max: max, ready: make(chan struct{}, 1)}
	f.subs[s] = struct{}{}
	return s, true
}

// Sub is one attachment to a Fanout.
type Sub struct {
	f     *Fanout
	max   int
	ready chan struct{}

	mu      sync.Mutex
	queue   []Chunk
	size    int
	ended   bool
	dropped bool
}

// push queues b; false when that would overflow the queue, which drops
// the attachment.
func (s *Sub) push(n int, b []byte) bool {
	s.mu.Lock()
	if s.dropped {
		s.mu.Unlock()
		return false
	}
	if s.size+len(b) > s.max {
		s.dropped, s.queue, s.size = true, nil, 0
		s.mu.Unlock()
		s.wake()
		return false
	}
	s.queue = append(s.queue, Chunk{Stream: n, Data: b})
	s.size += len(b)
	s.mu.Unlock()
	s.wake()
	return true
}

func (s *Sub) wake() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Ready is signalled whenever Take may have something new to say.
func (s *Sub) Ready() <-chan struct{} { return s.ready }

// Take returns what is queued, and whether the output has ended (once
// the queue is empty, nothing more will come) or the attachment was
// dropped for falling behind (its queue is then lost).
func (s *Sub) Take() (chunks []Chunk, ended, dropped bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	chunks, s.queue, s.size = s.queue, nil, 0
	return chunks, s.ended, s.dropped
}

// Leave removes the attachment: nothing more is queued for it.
func (s *Sub) Leave() {
	s.f.mu.Lock()
	delete(s.f.subs, s)
	s.f.mu.Unlock()
	s.mu.Lock()
	s.dropped, s.queue, s.size = true, nil, 0
	s.mu.Unlock()
	s.wake()
}
