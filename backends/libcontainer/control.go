package libcontainer

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/crilog"
	"github.com/berthrun/berth/internal/errclass"
	"github.com/berthrun/berth/internal/logfile"
)

// The process that copies a container's output (its monitor, or the
// calling process for an Attached runtime) serves a control socket while
// it copies: containers/<id>/control/sock, in a directory of root's alone
// (0700; the socket itself 0600), which no container ever sees. A client
// connects and sends one request, a line of JSON (controlRequest, at most
// requestMax bytes, within requestTimeout); the process answers with a
// line of JSON, {} or the error and its class (controlReply). A request
// is one of:
//
//   - reopen: reopen the CRI log's path; answered once the new file is open.
//   - resize: set the size of the init's terminal.
//   - attach: join the init's streams. After a yes, the process sends
//     frames (frameHeader) of the init's output, of the streams asked
//     for, as it is written, then an end frame once the output has ended
//     and was copied; pings keep an idle connection checked. The client
//     sends frames of input for the init's standard input (when it asked
//     for it), then an end-of-input frame. A client that closes the
//     connection has detached.
//
// The process never waits on a client: a connection that says nothing is
// dropped after requestTimeout, an attachment that falls attachQueue bytes
// behind the output, or does not take a frame within attachWriteTimeout,
// is dropped, and at most maxConns connections are served at once, at
// most maxAttach of them attachments. A
// socket nobody listens on (its process is gone) refuses connections.
const (
	controlDir     = "control"
	controlSock    = "sock"
	requestMax     = 4096
	requestTimeout = 10 * time.Second
	maxConns       = 64
	// maxAttach is how many of those connections may be attachments,
	// which last: the others are left for reopen and resize requests,
	// which the kubelet's log rotation needs however many attachments a
	// tenant's users open.
	maxAttach          = 32
	attachQueue        = 1 << 20
	attachWriteTimeout = 10 * time.Second
	attachPing         = 5 * time.Second
	// attachDrain is how long attachments get to take the last of the
	// output once it has ended, before the process goes.
	attachDrain = 10 * time.Second
	frameMax    = 64 << 10
)

// Requests on the control socket.
const (
	opReopen = "reopen"
	opResize = "resize"
	opAttach = "attach"
)

// controlRequest is a request on the control socket.
type controlRequest struct {
	Op string `json:"op"`
	// Height and Width are the terminal's new size (resize).
	Height uint16 `json:"height,omitempty"`
	Width  uint16 `json:"width,omitempty"`
	// Stdin, Stdout and Stderr are the streams an attachment joins.
	Stdin  bool `json:"stdin,omitempty"`
	Stdout bool `json:"stdout,omitempty"`
	Stderr bool `json:"stderr,omitempty"`
}

// controlReply answers a request.
type controlReply struct {
	Error string `json:"error,omitempty"`
	Class string `json:"class,omitempty"`
}

func replyTo(err error) controlReply {
	if err == nil {
		return controlReply{}
	}
	return controlReply{Error: err.Error(), Class: errclass.Name(errclass.Ensure(err))}
}

// Frame kinds: a frame is an 8-byte header, the kind, three zero bytes and
// the payload's length (big-endian uint32), then the payload.
const (
	frameStdin    byte = 0 // client: input
	frameStdout   byte = 1
	frameStderr   byte = 2
	frameEnd      byte = 3 // the output ended and was copied
	framePing     byte = 4
	frameStdinEnd byte = 5 // client: the end of its input
)

// Streams of a Fanout: the frame kinds of the output.
const (
	streamStdout = int(frameStdout)
	streamStderr = int(frameStderr)
)

func writeFrame(w io.Writer, kind byte, p []byte) error {
	var h [8]byte
	h[0] = kind
	binary.BigEndian.PutUint32(h[4:], uint32(len(p)))
	bufs := net.Buffers{h[:], p}
	_, err := bufs.WriteTo(w)
	return err
}

func readFrame(r *bufio.Reader) (byte, []byte, error) {
	var h [8]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[4:])
	if n > frameMax || h[1]|h[2]|h[3] != 0 {
		return 0, nil, fmt.Errorf("bad frame header %x", h)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, err
	}
	return h[0], p, nil
}

// controlled is what a container's control socket acts on.
type controlled struct {
	// cri is the CRI log, nil without one.
	cri      *crilog.Writer
	reopenMu sync.Mutex
	// criClosed: the output ended, the CRI log is closed.
	criClosed bool
	// fan hands the output to attachments.
	fan *logfile.Fanout
	// stdin feeds the init's standard input, nil when it is not kept
	// open for attachments (driver.CreateRequest.OpenStdin).
	stdin *stdinFeed
	// master is the init's terminal, nil without one.
	master *os.File
	// attaching holds a token for each attachment served (maxAttach).
	attaching chan struct{}
}

// controlServer serves a container's control socket.
type controlServer struct {
	l     *net.UnixListener
	ctl   *controlled
	sem   chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// listenControl makes the container's control socket in dir; serve starts
// answering on it.
func listenControl(dir string) (*controlServer, error) {
	cdir := filepath.Join(dir, controlDir)
	if err := os.Mkdir(cdir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// Whatever made it, it is root's alone from here on.
	if err := os.Chmod(cdir, 0o700); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	_ = os.Remove(filepath.Join(cdir, controlSock))
	path, done, err := inDir(cdir, controlSock)
	if err != nil {
		return nil, err
	}
	defer done()
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ul := l.(*net.UnixListener)
	// The socket file is left to Delete, which removes the directory: a
	// request after the copy ended is refused as for a dead process.
	ul.SetUnlinkOnClose(false)
	if err := os.Chmod(filepath.Join(cdir, controlSock), 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return &controlServer{l: ul, sem: make(chan struct{}, maxConns), conns: map[net.Conn]struct{}{}}, nil
}

// inDir names file in dir through a descriptor of dir, so that a socket's
// path never exceeds the 108 bytes of sun_path however deep the state root
// is; the returned function closes the descriptor.
func inDir(dir, file string) (string, func(), error) {
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return "/proc/self/fd/" + strconv.Itoa(dfd) + "/" + file, func() { unix.Close(dfd) }, nil
}

// serve answers requests about ctl until stop.
func (s *controlServer) serve(ctl *controlled) {
	s.ctl = ctl
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := s.l.AcceptUnix()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				time.Sleep(10 * time.Millisecond) // out of descriptors, say
				continue
			}
			select {
			case s.sem <- struct{}{}:
			default:
				go refuse(conn, fmt.Errorf("%d connections served already: %w", maxConns, errdefs.ErrResourceExhausted))
				continue
			}
			s.mu.Lock()
			s.conns[conn] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					s.mu.Lock()
					delete(s.conns, conn)
					s.mu.Unlock()
					conn.Close()
					<-s.sem
				}()
				s.handle(conn)
			}()
		}
	}()
}

func refuse(conn net.Conn, err error) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	b, _ := json.Marshal(replyTo(err))
	_, _ = conn.Write(append(b, '\n'))
}

// close stops listening: no more connections (those there are go on).
func (s *controlServer) close() { s.l.Close() }

// drain ends the service once the output has ended: no more connections,
// the attachments get attachDrain to take the end of the output, then
// every connection is closed; it returns once no request is served. It is
// called once the exit is known to all (Wait returned), so that no
// attachment ever holds up a Wait.
func (s *controlServer) drain() {
	s.l.Close()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-time.After(attachDrain):
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	<-done
}

// handle serves one connection.
func (s *controlServer) handle(conn *net.UnixConn) {
	_ = conn.SetDeadline(time.Now().Add(requestTimeout))
	br := bufio.NewReaderSize(conn, requestMax)
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			reply(conn, fmt.Errorf("request longer than %d bytes: %w", requestMax, errdefs.ErrInvalidArgument))
		}
		return
	}
	var req controlRequest
	if err := json.Unmarshal(line, &req); err != nil {
		reply(conn, fmt.Errorf("bad request %q: %w", line, errdefs.ErrInvalidArgument))
		return
	}
	ctl := s.ctl
	switch req.Op {
	case opReopen:
		reply(conn, ctl.reopen())
	case opResize:
		reply(conn, ctl.resize(req.Height, req.Width))
	case opAttach:
		ctl.attach(conn, br, req)
	default:
		reply(conn, fmt.Errorf("unknown request %q: %w", req.Op, errdefs.ErrInvalidArgument))
	}
}

// reply answers a request (the connection's deadline bounds the write).
func reply(conn net.Conn, err error) bool {
	b, _ := json.Marshal(replyTo(err))
	_, werr := conn.Write(append(b, '\n'))
	return werr == nil
}

func (ctl *controlled) reopen() error {
	if ctl.cri == nil {
		return fmt.Errorf("created without a CRI log: %w", errdefs.ErrFailedPrecondition)
	}
	ctl.reopenMu.Lock()
	defer ctl.reopenMu.Unlock()
	if ctl.criClosed {
		return fmt.Errorf("reopen: %w: %w", errNotServed, errdefs.ErrFailedPrecondition)
	}
	return errclass.Ensure(ctl.cri.Reopen())
}

// closeCRILog closes the CRI log once the output ended.
func (ctl *controlled) closeCRILog() {
	if ctl.cri == nil {
		return
	}
	ctl.reopenMu.Lock()
	defer ctl.reopenMu.Unlock()
	ctl.criClosed = true
	ctl.cri.Close()
}

func (ctl *controlled) resize(height, width uint16) error {
	if ctl.master == nil {
		return fmt.Errorf("resize: the init has no terminal: %w", errdefs.ErrFailedPrecondition)
	}
	return setWinsize(ctl.master, height, width)
}

// attach serves an attachment: the output to the client, the client's
// input to the init's standard input.
func (ctl *controlled) attach(conn *net.UnixConn, br *bufio.Reader, req controlRequest) {
	if req.Stdin && ctl.stdin == nil {
		reply(conn, fmt.Errorf("attach: standard input is not kept open for attachments: %w", errdefs.ErrFailedPrecondition))
		return
	}
	select {
	case ctl.attaching <- struct{}{}:
		defer func() { <-ctl.attaching }()
	default:
		reply(conn, fmt.Errorf("attach: %d attachments served already: %w", maxAttach, errdefs.ErrResourceExhausted))
		return
	}
	// Joined before the answer: whatever the init writes once the client
	// has it reaches the client.
	sub, ok := ctl.fan.Join(attachQueue)
	if !reply(conn, nil) {
		if ok {
			sub.Leave()
		}
		return
	}
	if !ok {
		// The output ended already.
		_ = writeFrame(conn, frameEnd, nil)
		return
	}
	_ = conn.SetDeadline(time.Time{})
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// The client's end: a detach, or a broken client. Either way
		// nothing more goes to it.
		defer sub.Leave()
		ctl.readInput(br, req.Stdin, done)
	}()
	sendOutput(conn, sub, req)
	close(done)
	// The reader ends once the connection closes (handle's caller).
	conn.Close()
	wg.Wait()
}

// sendOutput writes the output sub gets to conn until it ends (then an end
// frame) or the attachment is dropped.
func sendOutput(conn net.Conn, sub *logfile.Sub, req controlRequest) {
	ping := time.NewTicker(attachPing)
	defer ping.Stop()
	send := func(kind byte, p []byte) bool {
		_ = conn.SetWriteDeadline(time.Now().Add(attachWriteTimeout))
		if err := writeFrame(conn, kind, p); err != nil {
			sub.Leave()
			return false
		}
		return true
	}
	for {
		chunks, ended, dropped := sub.Take()
		if dropped {
			return
		}
		for _, c := range chunks {
			if (c.Stream == streamStdout && req.Stdout) || (c.Stream == streamStderr && req.Stderr) {
				if !send(byte(c.Stream), c.Data) {
					return
				}
			}
		}
		if ended {
			send(frameEnd, nil)
			return
		}
		select {
		case <-sub.Ready():
		case <-ping.C:
			if !send(framePing, nil) {
				return
			}
		}
	}
}

// readInput reads the client's frames until the connection ends, feeding
// the init's standard input with them when the client asked for it.
func (ctl *controlled) readInput(br *bufio.Reader, stdin bool, done <-chan struct{}) {
	ended := !stdin
	defer func() {
		if !ended {
			// A detach ends the input too.
			ctl.stdin.end()
		}
	}()
	for {
		kind, p, err := readFrame(br)
		if err != nil {
			return
		}
		switch {
		case kind == frameStdin && !ended:
			if len(p) > 0 && !ctl.stdin.write(done, p) {
				return
			}
		case kind == frameStdinEnd && !ended:
			ended = true
			ctl.stdin.end()
		case kind == frameStdin || kind == frameStdinEnd:
			// Input after its end, or never asked for: dropped.
		default:
			return
		}
	}
}

// stdinFeed writes into the init's standard input (the write end of its
// pipe, or its terminal) what the attachments send. One goroutine owns the
// writes: an init that never reads holds that goroutine and one chunk,
// never the attachments, which give up on their chunk when they end.
type stdinFeed struct {
	w *os.File
	// closeOnEnd: the end of the first input closes w (StdinOnce,
	// without a terminal: a terminal has no end of input).
	closeOnEnd bool
	in         chan feedMsg
	// ended is closed by the first end of an input: an end is never
	// lost, however long the write before it blocks.
	ended    chan struct{}
	endOnce  sync.Once
	stopCh   chan struct{}
	stopped  chan struct{}
	stopOnce sync.Once
}

type feedMsg struct {
	data []byte
}

// newStdinFeed starts feeding w; ownW: the feed closes w when it stops.
func newStdinFeed(w *os.File, closeOnEnd, ownW bool) *stdinFeed {
	f := &stdinFeed{w: w, closeOnEnd: closeOnEnd, in: make(chan feedMsg), ended: make(chan struct{}), stopCh: make(chan struct{}), stopped: make(chan struct{})}
	go f.run(ownW)
	return f
}

func (f *stdinFeed) run(ownW bool) {
	defer close(f.stopped)
	closed := false
	closeW := func() {
		if !closed && ownW {
			f.w.Close()
		}
		closed = true
	}
	defer closeW()
	ended := f.ended
	for {
		select {
		case <-ended:
			// Whatever an input handed over before its end was
			// written already: it was taken before end was called.
			if f.closeOnEnd {
				closeW()
			}
			ended = nil
		case m := <-f.in:
			switch {
			case closed:
			default:
				if _, err := f.w.Write(m.data); err != nil {
					// The init closed its standard input, or is
					// gone: what comes next is dropped.
					closeW()
				}
			}
		case <-f.stopCh:
			return
		}
	}
}

// write hands p to the feed; false once done is closed or the feed
// stopped.
func (f *stdinFeed) write(done <-chan struct{}, p []byte) bool {
	select {
	case f.in <- feedMsg{data: p}:
		return true
	case <-done:
	case <-f.stopped:
	}
	return false
}

// end tells the feed an input ended. It never blocks: a feed busy with a
// write the init does not read gets the end once the write is done, even
// when the attachment that ended is gone by then.
func (f *stdinFeed) end() {
	f.endOnce.Do(func() { close(f.ended) })
}

// copyFrom feeds r (the caller's stdin of an init with a terminal) until
// it ends or the feed stops.
func (f *stdinFeed) copyFrom(r io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 && !f.write(nil, append([]byte(nil), buf[:n]...)) {
			return
		}
		if err != nil {
			f.end()
			return
		}
	}
}

// stop ends the feed, interrupting a write under way when the feed owns
// w (os.Pipe's files are pollable).
func (f *stdinFeed) stop(ownW bool) {
	f.stopOnce.Do(func() {
		close(f.stopCh)
		if ownW {
			f.w.Close()
		}
		<-f.stopped
	})
}

// errNotServed is a control request to a container whose output nobody
// copies any more (it ended, or the process copying it died).
var errNotServed = errors.New("no process copies the container's output any more")

// control sends req on container id's control socket and returns the
// connection once the answer is yes, positioned after it.
func (r *Runtime) control(ctx context.Context, id string, req controlRequest) (*net.UnixConn, *bufio.Reader, error) {
	path, done, err := inDir(filepath.Join(r.dir(id), controlDir), controlSock)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("%s: %w: %w", req.Op, errNotServed, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return nil, nil, classify(err)
	}
	defer done()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.ENOENT) {
		return nil, nil, fmt.Errorf("%s: %w: %w", req.Op, errNotServed, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", req.Op, classify(err))
	}
	conn := c.(*net.UnixConn)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*net.UnixConn, *bufio.Reader, error) {
		stop()
		conn.Close()
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, err
	}
	b, _ := json.Marshal(req)
	// A server that refuses the connection (too many) answers before it
	// reads the request and closes: the write may then fail, with the
	// answer waiting to be read.
	_, werr := conn.Write(append(b, '\n'))
	br := bufio.NewReader(conn)
	line, err := readLine(br, 1<<20)
	if err != nil {
		if werr != nil {
			err = werr
		}
		return fail(controlConnErr(req.Op, err))
	}
	var rep controlReply
	if err := json.Unmarshal(line, &rep); err != nil {
		return fail(fmt.Errorf("%s: reply %q: %w", req.Op, line, errdefs.ErrUnknown))
	}
	if rep.Error != "" {
		return fail(fmt.Errorf("%s: %w", rep.Error, errclass.FromName(rep.Class)))
	}
	if !stop() {
		// ctx ended as the answer came: its deadline is set.
		return fail(ctx.Err())
	}
	return conn, br, nil
}

// readLine reads a line of at most max bytes.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		part, err := br.ReadSlice('\n')
		line = append(line, part...)
		if len(line) > max {
			return nil, fmt.Errorf("line longer than %d bytes", max)
		}
		if err == nil {
			return line, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
}

// controlConnErr is the error of a request whose connection broke: the
// process went away while it was asked.
func controlConnErr(op string, err error) error {
	return fmt.Errorf("%s: %v: the process copying the container's output went away: %w", op, err, errdefs.ErrFailedPrecondition)
}

// request sends a request that takes a plain answer.
func (r *Runtime) request(ctx context.Context, id string, req controlRequest) error {
	conn, _, err := r.control(ctx, id, req)
	if err != nil {
		return err
	}
	return conn.Close()
}
