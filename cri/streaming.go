package cri

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
)

// DefaultStreamAddr is where the streaming server listens unless told
// otherwise: loopback, on a port the kernel picks.
const DefaultStreamAddr = "127.0.0.1:0"

// streamShutdownGrace bounds how long a closing server waits for its
// streams to end once it has ended them (killed the execs, dropped the
// attachments, closed the connections).
const streamShutdownGrace = 30 * time.Second

// forwardTTL is how long a port-forward URL waits for its request: the
// streaming library forgets its token after a minute.
const forwardTTL = 2 * time.Minute

// streamServer serves the URLs that Exec, Attach and PortForward return,
// with k8s.io/cri-streaming, on a loopback listener of its own. Every
// stream lives within the context of the client's connection: when the
// client goes away (or the server closes), an exec's process is killed,
// an attachment is dropped and a forwarded connection is closed.
type streamServer struct {
	lib    streaming.Server
	http   *http.Server
	l      *streamListener
	cancel context.CancelFunc

	// hmu guards handlers against a close that is waiting for them.
	hmu      sync.Mutex
	closed   bool
	handlers sync.WaitGroup

	fmu      sync.Mutex
	forwards map[string]*forward // by key
	byPath   map[string]*forward // by URL path, until its request comes
}

// forward is a port-forward URL handed out: the library hands its key
// back to streamRuntime.PortForward in place of the pod's ID (it passes
// no context of its own there), which finds the pod and the context of
// the client's request here.
type forward struct {
	key, sandbox, path string
	expires            time.Time
	ctx                context.Context // the request's, once it came
}

// newStreamServer listens on addr, a loopback address: the server has
// neither authentication nor TLS, and whoever reaches it with a URL runs
// what the URL says.
func newStreamServer(addr string, rt streaming.Runtime) (*streamServer, error) {
	if addr == "" {
		addr = DefaultStreamAddr
	}
	if err := checkLoopback(addr); err != nil {
		return nil, err
	}
	inner, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cri: streaming server: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &streamServer{
		l:        &streamListener{Listener: inner, ctx: ctx, conns: map[*streamConn]struct{}{}},
		cancel:   cancel,
		forwards: map[string]*forward{},
		byPath:   map[string]*forward{},
	}
	cfg := streaming.DefaultConfig
	cfg.Addr = inner.Addr().String()
	cfg.BaseURL = &url.URL{Scheme: "http", Host: inner.Addr().String()}
	s.lib, err = streaming.NewServer(cfg, rt)
	if err != nil {
		inner.Close()
		cancel()
		return nil, fmt.Errorf("cri: streaming server: %w", err)
	}
	s.http = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 30 * time.Second,
		// A connection no stream took over.
		IdleTimeout: 2 * time.Minute,
		BaseContext: func(net.Listener) context.Context { return ctx },
		// A request lives within its connection: see streamConn.
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if sc, ok := c.(*streamConn); ok {
				return context.WithValue(sc.ctx, http.ServerContextKey, s.http)
			}
			return ctx
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go func() { _ = s.http.Serve(s.l) }()
	return s, nil
}

// checkLoopback refuses an address that is not host:port with a loopback
// IP for host (a name could resolve to anything).
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("cri: streaming address %q: %v: %w", addr, err, errdefs.ErrInvalidArgument)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("cri: streaming address %q: not a loopback address (the streaming server has no authentication): %w", addr, errdefs.ErrInvalidArgument)
	}
	return nil
}

// addr is where the server listens.
func (s *streamServer) addr() net.Addr { return s.l.Addr() }

// ServeHTTP serves one stream, counted so that close waits for it.
func (s *streamServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.hmu.Lock()
	if s.closed {
		s.hmu.Unlock()
		http.Error(w, "the streaming server is closing", http.StatusServiceUnavailable)
		return
	}
	s.handlers.Add(1)
	s.hmu.Unlock()
	defer s.handlers.Done()
	if f := s.claimForward(r.URL.Path); f != nil {
		// The library gives PortForward no context: this request's is
		// found by the forward's key, and ends with the request (the
		// library returns once the client's connection closes).
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		s.fmu.Lock()
		f.ctx = ctx
		s.fmu.Unlock()
		defer s.dropForward(f)
	}
	s.lib.ServeHTTP(w, r)
}

// addForward records the port-forward URL u of pod sandbox under key, and
// forgets those whose request never came.
func (s *streamServer) addForward(key, sandbox string, u *url.URL) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	now := time.Now()
	for p, f := range s.byPath {
		if now.After(f.expires) {
			delete(s.byPath, p)
			delete(s.forwards, f.key)
		}
	}
	f := &forward{key: key, sandbox: sandbox, path: u.Path, expires: now.Add(forwardTTL)}
	s.forwards[key] = f
	s.byPath[u.Path] = f
}

// claimForward is the forward whose URL path is p, taken for its only
// request; nil for any other path.
func (s *streamServer) claimForward(p string) *forward {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	f := s.byPath[p]
	delete(s.byPath, p)
	return f
}

func (s *streamServer) dropForward(f *forward) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	delete(s.forwards, f.key)
}

// forward is the pod and the request's context of the forward key.
func (s *streamServer) forward(key string) (string, context.Context, error) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	f, ok := s.forwards[key]
	if !ok || f.ctx == nil {
		return "", nil, fmt.Errorf("port forward: its request is over: %w", errdefs.ErrNotFound)
	}
	return f.sandbox, f.ctx, nil
}

// close ends every stream (the execs' processes are killed, attachments
// dropped, forwarded connections closed), closes the listener and the
// clients' connections, and waits for the streams' handlers to return.
func (s *streamServer) close() error {
	s.hmu.Lock()
	s.closed = true
	s.hmu.Unlock()
	s.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), streamShutdownGrace)
	defer cancel()
	// Shutdown closes the listener and the idle connections; the upgraded
	// ones are the server's no more, and are closed here.
	shut := make(chan error, 1)
	go func() { shut <- s.http.Shutdown(ctx) }()
	s.l.closeConns()
	done := make(chan struct{})
	go func() { s.handlers.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("cri: streaming server: streams still running after %s", streamShutdownGrace)
	}
	if err := <-shut; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("cri: streaming server: %w", err)
	}
	return nil
}

// streamListener tracks its connections, so that close can end them all
// (http.Server forgets a connection once a stream upgrades it).
type streamListener struct {
	net.Listener
	ctx context.Context

	mu     sync.Mutex
	conns  map[*streamConn]struct{}
	closed bool

	closeOnce sync.Once
	closeErr  error
}

// Close closes the listener once: both close and the server's Shutdown
// do, in either order.
func (l *streamListener) Close() error {
	l.closeOnce.Do(func() { l.closeErr = l.Listener.Close() })
	return l.closeErr
}

func (l *streamListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(l.ctx)
	sc := &streamConn{Conn: c, ctx: ctx, cancel: cancel, l: l}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		cancel()
		c.Close()
		return nil, net.ErrClosed
	}
	l.conns[sc] = struct{}{}
	return sc, nil
}

// closeConns closes the listener and every connection, and refuses
// those accepted later. The listener is closed here, not only by the
// server's Shutdown: a server closed before its Serve goroutine ran
// would otherwise keep listening until that goroutine got to run.
func (l *streamListener) closeConns() {
	_ = l.Close()
	l.mu.Lock()
	l.closed = true
	conns := make([]*streamConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// streamConn is a client's connection, whose context ends when the
// client is gone (a read fails: it closed the connection, or it was
// reset) or the connection is closed. net/http no longer watches a
// connection that a stream took over (it cancels a request's context
// only when its handler returns), so this is how a stream learns that
// nobody is at the other end any more.
type streamConn struct {
	net.Conn
	ctx    context.Context
	cancel context.CancelFunc
	l      *streamListener
	once   sync.Once
}

func (c *streamConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	// A deadline is net/http's own doing (it aborts its background read
	// before it hands the connection over), not the client's.
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		c.cancel()
	}
	return n, err
}

func (c *streamConn) Close() error {
	c.once.Do(func() {
		c.cancel()
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// validateStreams checks the streams a request asks for, as the
// streaming library would, with the error class and the object named.
func validateStreams(what, id string, stdin, stdout, stderr, tty bool) error {
	if !stdin && !stdout && !stderr {
		return fmt.Errorf("%s %s: one of stdin, stdout and stderr must be asked for: %w", what, id, errdefs.ErrInvalidArgument)
	}
	if tty && stderr {
		// A terminal has one output.
		return fmt.Errorf("%s %s: tty and stderr together: %w", what, id, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Exec returns the URL where the streaming server runs a command in a
// running container, its streams served over the client's connection.
func (s *RuntimeService) Exec(ctx context.Context, req *cri.ExecRequest) (*cri.ExecResponse, error) {
	c, rc, err := s.lookup(ctx, req.GetContainerId())
	if err != nil {
		return nil, grpcError(err)
	}
	if len(req.GetCmd()) == 0 {
		return nil, grpcError(fmt.Errorf("exec in %s: no command: %w", c.ID, errdefs.ErrInvalidArgument))
	}
	if err := validateStreams("exec in", c.ID, req.GetStdin(), req.GetStdout(), req.GetStderr(), req.GetTty()); err != nil {
		return nil, grpcError(err)
	}
	rt, err := s.containerHandler(c)
	if err != nil {
		return nil, grpcError(err)
	}
	if req.GetTty() && !rt.Capabilities().Terminal {
		return nil, grpcError(fmt.Errorf("exec in %s: a terminal: %w", c.ID, errdefs.ErrNotImplemented))
	}
	if err := requireRunning(ctx, c, rc, "exec in"); err != nil {
		return nil, grpcError(err)
	}
	resp, err := s.stream.lib.GetExec(&cri.ExecRequest{ContainerId: c.ID, Cmd: req.GetCmd(), Tty: req.GetTty(), Stdin: req.GetStdin(), Stdout: req.GetStdout(), Stderr: req.GetStderr()})
	if err != nil {
		return nil, err // a status of the library's
	}
	return resp, nil
}

// Attach returns the URL where the streaming server joins the streams of
// a running container's process.
func (s *RuntimeService) Attach(ctx context.Context, req *cri.AttachRequest) (*cri.AttachResponse, error) {
	c, rc, err := s.lookup(ctx, req.GetContainerId())
	if err != nil {
		return nil, grpcError(err)
	}
	if err := validateStreams("attach to", c.ID, req.GetStdin(), req.GetStdout(), req.GetStderr(), req.GetTty()); err != nil {
		return nil, grpcError(err)
	}
	rt, err := s.containerHandler(c)
	if err != nil {
		return nil, grpcError(err)
	}
	if !rt.Capabilities().Attach {
		return nil, grpcError(fmt.Errorf("attach to %s: %w", c.ID, errdefs.ErrNotImplemented))
	}
	if err := requireRunning(ctx, c, rc, "attach to"); err != nil {
		return nil, grpcError(err)
	}
	resp, err := s.stream.lib.GetAttach(&cri.AttachRequest{ContainerId: c.ID, Stdin: req.GetStdin(), Stdout: req.GetStdout(), Stderr: req.GetStderr(), Tty: req.GetTty()})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// PortForward returns the URL where the streaming server forwards
// connections to ports of a ready pod's loopback (the host's, for a pod on
// the host's network).
func (s *RuntimeService) PortForward(ctx context.Context, req *cri.PortForwardRequest) (*cri.PortForwardResponse, error) {
	sb, err := s.state.sandbox(req.GetPodSandboxId())
	if err != nil {
		return nil, grpcError(err)
	}
	for _, p := range req.GetPort() {
		if p < 1 || p > 65535 {
			return nil, grpcError(fmt.Errorf("port forward to pod %s: port %d out of range: %w", sb.ID, p, errdefs.ErrInvalidArgument))
		}
	}
	if s.podState(ctx, sb) != cri.PodSandboxState_SANDBOX_READY {
		return nil, grpcError(fmt.Errorf("port forward to pod %s: the pod is not ready: %w", sb.ID, errdefs.ErrFailedPrecondition))
	}
	key := newID()
	resp, err := s.stream.lib.GetPortForward(&cri.PortForwardRequest{PodSandboxId: key, Port: req.GetPort()})
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(resp.GetUrl())
	if err != nil {
		return nil, grpcError(fmt.Errorf("port forward to pod %s: the streaming server's URL: %w", sb.ID, err))
	}
	s.stream.addForward(key, sb.ID, u)
	return resp, nil
}
