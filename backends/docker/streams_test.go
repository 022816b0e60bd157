package docker

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The outbox writes stdout's and stderr's output in the order it came,
// from one goroutine, and all of it once finished.
func TestOutboxOrder(t *testing.T) {
	var w bytes.Buffer // not safe for concurrent use: the race detector tells
	o := newOutbox(&w, &w)
	go o.run()
	for i := 0; i < 1000; i++ {
		o.stream(i % 2).Write([]byte{byte('a' + i%2)})
	}
	o.finish()
	require.True(t, o.wait())
	assert.Equal(t, strings.Repeat("ab", 500), w.String())
	assert.NoError(t, o.error())
}

// gateWriter blocks each write until the test lets one through, and
// counts the writes begun.
type gateWriter struct {
	begun atomic.Int64
	gate  chan struct{}
	mu    sync.Mutex
	b     bytes.Buffer
}

func (g *gateWriter) Write(p []byte) (int, error) {
	g.begun.Add(1)
	<-g.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.b.Write(p)
}

// A writer blocked with the backlog full is dropped after writerStall: the
// attachment's reader is held that long at most, what is queued is
// dropped, and no write begins after.
func TestOutboxBlockedWriterDropped(t *testing.T) {
	g := &gateWriter{gate: make(chan struct{})}
	o := newOutbox(g, nil)
	go o.run()
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	for i := 0; i < attachBacklog/len(chunk)+2; i++ {
		o.stream(0).Write(chunk) // the last one waits writerStall, then drops
	}
	<-o.failed
	assert.True(t, errdefs.IsResourceExhausted(o.error()), "%v", o.error())
	o.stream(0).Write(chunk) // returns at once
	assert.False(t, o.wait(), "the write in progress is blocked")
	close(g.gate)
	<-o.done
	assert.Equal(t, int64(1), g.begun.Load(), "no write begins after the drop")
	o.stream(1).Write(chunk) // a discarded stream
}

type failingWriter struct{ n atomic.Int64 }

func (f *failingWriter) Write(p []byte) (int, error) {
	f.n.Add(1)
	return 0, errors.New("gone")
}

// A writer that fails is dropped with its error, and written to no more.
func TestOutboxFailingWriter(t *testing.T) {
	f := &failingWriter{}
	o := newOutbox(f, f)
	go o.run()
	o.stream(0).Write([]byte("one"))
	<-o.failed
	o.stream(1).Write([]byte("two"))
	o.finish()
	require.True(t, o.wait())
	assert.ErrorContains(t, o.error(), "gone")
	assert.Equal(t, int64(1), f.n.Load())
}

// An aborted outbox drops what is queued and begins no write.
func TestOutboxAbort(t *testing.T) {
	g := &gateWriter{gate: make(chan struct{})}
	o := newOutbox(g, nil)
	go o.run()
	o.stream(0).Write([]byte("first"))
	require.Eventually(t, func() bool { return g.begun.Load() == 1 }, time.Minute, time.Millisecond)
	o.stream(0).Write([]byte("queued"))
	o.abort()
	close(g.gate)
	require.True(t, o.wait())
	assert.Equal(t, "first", g.b.String())
	assert.Equal(t, int64(1), g.begun.Load())
}
