package docker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/berthrun/berth/internal/errclass"
	"github.com/berthrun/berth/runtime/driver"
)

// An attachment copies a process's standard streams between the caller's
// reader and writers and a hijacked Engine API connection. Without a
// terminal Docker multiplexes stdout and stderr on it; with one it sends
// the terminal's output as it comes.
//
// Docker's own attach blocks the container's output, its log and every
// other attachment on a client that does not read (past a megabyte it
// holds for it): an attachment reads the connection into an outbox that
// one goroutine empties into the caller's writers. The outbox holds up to
// attachBacklog; past that the attachment reads on as the writers take
// their output, and a writer that takes nothing for writerStall (one write
// blocked that long), or fails, is dropped with the whole attachment: the
// container and the other attachments are held up by writerStall at most.
type attachment struct {
	resp client.HijackedResponse
	out  *outbox
	// stopc is closed by stop: the attachment is dropped.
	stopc    chan struct{}
	stopOnce sync.Once
	// endc is closed by end: the output is over (the container exited
	// but the daemon kept the stream open), what came is copied.
	endc    chan struct{}
	endOnce sync.Once
	// done is closed once the connection is closed and the writers took
	// the output, or were left behind; err then says why the output did
	// not reach them all (nil if it did).
	done chan struct{}
	err  error
}

// How an attachment treats the streams.
type attachOptions struct {
	// tty: the process has a terminal, its output comes as it is.
	tty bool
	// closeStdin: at the end of the caller's reader, close the write
	// side of the connection, for the daemon to close the process's
	// stdin. Without it the reader's end is not passed on: the daemon
	// would end the attachment's output instead (an attach without
	// StdinOnce, or with a terminal).
	closeStdin bool
}

const (
	// attachBacklog is how much output an attachment holds for writers
	// slower than the container.
	attachBacklog = 1 << 20
	// writerStall is how long one write may block before the attachment
	// is dropped: while the backlog is full, once the output ended, and
	// once the attachment was dropped (the write in progress).
	writerStall = 5 * time.Second
	// exitGrace is how long an attachment waits for the daemon to end its
	// stream once the container exited: the daemon never ends an attach
	// it registers after the exit.
	exitGrace = 2 * time.Second
)

// copyStreams starts copying: output until the daemon ends the stream
// (the process and everything holding its stdout exited), input until the
// reader ends.
func copyStreams(resp client.HijackedResponse, pio driver.IO, o attachOptions) *attachment {
	stderr := pio.Stderr
	if o.tty {
		// A terminal has one output.
		stderr = nil
	}
	a := &attachment{resp: resp, out: newOutbox(pio.Stdout, stderr), stopc: make(chan struct{}), endc: make(chan struct{}), done: make(chan struct{})}
	go a.out.run()
	copied := make(chan error, 1)
	go func() {
		var err error
		if o.tty {
			_, err = io.Copy(a.out.stream(0), resp.Reader)
		} else {
			_, err = stdcopy.StdCopy(a.out.stream(0), a.out.stream(1), resp.Reader)
		}
		copied <- err
	}()
	if pio.Stdin != nil {
		go func() {
			_, err := io.Copy(resp.Conn, pio.Stdin)
			if err == nil && o.closeStdin {
				_ = resp.CloseWrite()
			}
		}()
	}
	go a.supervise(copied)
	return a
}

// supervise ends the attachment: when the output ends, a writer is
// dropped, or the caller drops the attachment.
func (a *attachment) supervise(copied <-chan error) {
	defer close(a.done)
	var err error
	select {
	case err = <-copied:
		a.resp.Close()
		if err != nil {
			err = fmt.Errorf("attach stream: %w", classify(err))
		}
		a.out.finish()
	case <-a.endc:
		a.resp.Close()
		<-copied
		a.out.finish()
	case <-a.out.failed:
		a.resp.Close()
		<-copied
		a.out.abort()
	case <-a.stopc:
		// Before the close: the copy may be waiting for room.
		a.out.abort()
		a.resp.Close()
		<-copied
	}
	left := !a.out.wait()
	if left {
		// No write begins after the attachment ended.
		a.out.abort()
	}
	if werr := a.out.error(); werr != nil {
		err = werr
	} else if left {
		err = fmt.Errorf("attach: a writer blocked for %s: %w", writerStall, errdefs.ErrResourceExhausted)
	}
	a.err = err
}

// stop drops the attachment (idempotent): the connection is closed, output
// not yet written is lost.
func (a *attachment) stop() {
	a.stopOnce.Do(func() { close(a.stopc) })
}

// end closes the connection after the container exited: what came is
// written.
func (a *attachment) end() {
	a.endOnce.Do(func() { close(a.endc) })
}

// outbox holds an attachment's output in order, stdout's and stderr's,
// until one goroutine writes it to the caller's writers: they are called
// one write at a time, as by a plain copy.
type outbox struct {
	w [2]io.Writer // stdout, stderr; nil: discarded

	mu    sync.Mutex
	queue []chunk
	size  int  // bytes taken and not yet written
	eof   bool // no more output: write what is queued, then return
	drop  bool // return after the write in progress, dropping the rest
	err   error
	// writing: a write is in progress, begun at since.
	writing bool
	since   time.Time
	// changed is closed and replaced at every change of the above.
	changed chan struct{}
	failed  chan struct{} // closed when err is set
	done    chan struct{} // closed when run returns
}

type chunk struct {
	stream int
	b      []byte
}

func newOutbox(stdout, stderr io.Writer) *outbox {
	return &outbox{w: [2]io.Writer{stdout, stderr}, changed: make(chan struct{}), failed: make(chan struct{}), done: make(chan struct{})}
}

// stream is the writer of one stream into the outbox. It returns once the
// outbox took the bytes, or dropped them, and never fails: the attachment
// reads on, to the end of the stream, whatever its writers do.
func (o *outbox) stream(i int) io.Writer { return streamWriter{o, i} }

type streamWriter struct {
	o *outbox
	i int
}

func (s streamWriter) Write(b []byte) (int, error) {
	s.o.put(s.i, b)
	return len(b), nil
}

// put queues b, waiting while the backlog is full for the writers to take
// some: for writerStall at most after the write in progress began.
func (o *outbox) put(stream int, b []byte) {
	if o.w[stream] == nil || len(b) == 0 {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for o.err == nil && !o.drop && !o.eof && o.size > 0 && o.size+len(b) > attachBacklog {
		if !o.waitLocked() {
			o.fail(fmt.Errorf("attach: a write blocked for %s with %d bytes pending: dropped: %w", writerStall, o.size, errdefs.ErrResourceExhausted))
			return
		}
	}
	if o.err != nil || o.drop || o.eof {
		return
	}
	if n := len(o.queue); n > 0 && o.queue[n-1].stream == stream {
		o.queue[n-1].b = append(o.queue[n-1].b, b...)
	} else {
		o.queue = append(o.queue, chunk{stream: stream, b: bytes.Clone(b)})
	}
	o.size += len(b)
	o.changedLocked()
}

// changedLocked wakes whoever waits on the outbox; o.mu is held.
func (o *outbox) changedLocked() {
	close(o.changed)
	o.changed = make(chan struct{})
}

// fail records the first failure; o.mu is held.
func (o *outbox) fail(err error) {
	if o.err != nil {
		return
	}
	o.err = err
	o.queue, o.size = nil, 0
	close(o.failed)
	o.changedLocked()
}

// run writes the output to the writers until finish or abort.
func (o *outbox) run() {
	defer func() {
		close(o.done)
		o.mu.Lock()
		o.changedLocked()
		o.mu.Unlock()
	}()
	for {
		o.mu.Lock()
		for len(o.queue) == 0 && !o.eof && !o.drop && o.err == nil {
			ch := o.changed
			o.mu.Unlock()
			<-ch
			o.mu.Lock()
		}
		if o.drop || o.err != nil || len(o.queue) == 0 {
			o.mu.Unlock()
			return
		}
		c := o.queue[0]
		o.queue = o.queue[1:]
		o.writing, o.since = true, time.Now()
		o.mu.Unlock()
		_, err := o.w[c.stream].Write(c.b)
		o.mu.Lock()
		o.size -= len(c.b)
		o.writing = false
		if err != nil {
			o.fail(fmt.Errorf("attach: writing the output: %w", errclass.Ensure(err)))
		}
		o.changedLocked()
		o.mu.Unlock()
	}
}

// finish lets run write what is queued, then return.
func (o *outbox) finish() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.eof = true
	o.changedLocked()
}

// abort makes run return after the write in progress.
func (o *outbox) abort() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.drop = true
	o.queue, o.size = nil, 0
	o.changedLocked()
}

// waitLocked waits for a change of the outbox, and reports false if
// instead the write in progress blocked for writerStall. o.mu is held, and
// released while waiting.
func (o *outbox) waitLocked() bool {
	ch := o.changed
	var stall <-chan time.Time
	if o.writing {
		left := writerStall - time.Since(o.since)
		if left <= 0 {
			return false
		}
		t := time.NewTimer(left)
		defer t.Stop()
		stall = t.C
	}
	o.mu.Unlock()
	defer o.mu.Lock()
	select {
	case <-ch:
		return true
	case <-stall:
		return false
	}
}

// wait waits for run to return, and reports whether it did: false if a
// write blocked for writerStall.
func (o *outbox) wait() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for {
		select {
		case <-o.done:
			return true
		default:
		}
		if !o.waitLocked() {
			return false
		}
	}
}

func (o *outbox) error() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// attach connects pio to a created container's streams before it starts,
// so that no output is missed. A reader given at create is the container's
// stdin, closed at its end (Docker's StdinOnce) but with a terminal, where
// Docker would end the output instead.
func (r *Runtime) attach(ctx context.Context, dockerID string, pio driver.IO, tty bool) (*attachment, error) {
	res, err := r.eng.ContainerAttach(ctx, dockerID, client.ContainerAttachOptions{
		Stream: true, Stdin: pio.Stdin != nil, Stdout: pio.Stdout != nil, Stderr: pio.Stderr != nil && !tty,
	})
	if err != nil {
		return nil, err
	}
	return copyStreams(res.HijackedResponse, pio, attachOptions{tty: tty, closeStdin: !tty}), nil
}

// logConfig caps a container's log as berth asks (driver.LogLimits): on
// the daemon's json-file and local drivers, which keep the log on the
// daemon's disk, through their max-size and max-file options. Other
// drivers send the output elsewhere (journald, syslog...) and have no such
// options: the daemon's configuration stands.
func logConfig(daemonDriver string, l driver.LogLimits) container.LogConfig {
	if daemonDriver != "json-file" && daemonDriver != "local" {
		return container.LogConfig{}
	}
	if l.MaxSize <= 0 {
		l.MaxSize = defaultLogMaxSize
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = defaultLogMaxFiles
	}
	return container.LogConfig{Type: daemonDriver, Config: map[string]string{
		"max-size": strconv.FormatInt(l.MaxSize, 10),
		"max-file": strconv.Itoa(l.MaxFiles),
	}}
}

// The caps of a request without any (the portable layer always sets them).
const (
	defaultLogMaxSize  = 10 << 20
	defaultLogMaxFiles = 2
)

// Logs implements driver.Logger. Docker keeps a container's output in its
// log driver whether or not writers were attached; this reads all of it
// back, stdout and stderr in the order they came (a terminal's output as
// stdout).
func (r *Runtime) Logs(ctx context.Context, id string) (io.ReadCloser, error) {
	body, tty, err := r.openLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		err := copyLog(pw, body, tty)
		body.Close()
		pw.CloseWithError(err)
	}()
	return &logReader{PipeReader: pr, body: body}, nil
}

// FollowLogs implements driver.LogFollower with the daemon's own follow,
// which ends when the container stops.
func (r *Runtime) FollowLogs(ctx context.Context, id string, tail int, w io.Writer) error {
	opts := client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Follow: true, Tail: "all"}
	if tail >= 0 {
		opts.Tail = strconv.Itoa(tail)
	}
	body, tty, err := r.openLogs(ctx, id, opts)
	if err != nil {
		return err
	}
	defer body.Close()
	err = copyLog(w, body, tty)
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// openLogs opens the daemon's log of container id, and tells whether it
// has a terminal: the daemon then sends the log as it is, not multiplexed.
func (r *Runtime) openLogs(ctx context.Context, id string, opts client.ContainerLogsOptions) (io.ReadCloser, bool, error) {
	c, err := r.inspect(ctx, id)
	if err != nil {
		return nil, false, err
	}
	body, err := r.eng.ContainerLogs(ctx, c.ID, opts)
	if errdefs.IsNotFound(err) {
		r.forget(id)
		return nil, false, notFound()
	}
	if err != nil {
		return nil, false, classify(err)
	}
	return body, c.Config != nil && c.Config.Tty, nil
}

// copyLog copies a log stream to w: stdout and stderr in turn, or a
// terminal's output.
func copyLog(w io.Writer, body io.Reader, tty bool) error {
	var err error
	if tty {
		_, err = io.Copy(w, body)
	} else {
		_, err = stdcopy.StdCopy(w, w, body)
	}
	return err
}

// logReader closes the daemon's response along with the pipe.
type logReader struct {
	*io.PipeReader
	body io.Closer
}

func (l *logReader) Close() error {
	l.body.Close()
	return l.PipeReader.Close()
}
