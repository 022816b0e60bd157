package libcontainer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/runc/libcontainer/configs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/errclass"
	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/runtime/driver"
)

// Supervisors keep the containers of a state root that no caller keeps
// (see doc.go, "Supervisors"). Supervisor n lives under
// supervisor/<n>/: it holds lock while it lives and serves sock (0600, in
// directories of root's alone); supervisor/start.lock is held while one is
// started or while one quits, so that a client never connects to one that
// is going away unawares. A client sends one request, a line of JSON
// (supervisorRequest) carrying, for a start, the container's standard
// streams as SCM_RIGHTS; the answer is a line of JSON (monitorStatus).
const (
	supervisorArg       = "berth-supervisor"
	supervisorDir       = "supervisor"
	supervisorStartLock = "start.lock"
	supervisorLock      = "lock"
	supervisorSock      = "sock"
	supervisorLogFile   = "log"
	// supervisorIdle is how long a supervisor with no container and no
	// client waits before it quits.
	supervisorIdle = 2 * time.Second
	// supervisorProto is the protocol's version: a supervisor refuses
	// requests of another (a binary of another berth started it).
	supervisorProto = 1
	// fdsPerContainer is what a supervisor counts its containers'
	// descriptors at (the monitor lock, the control socket, the kept log,
	// two output pipes, two pidfds, a CRI log, stdin, terminal), and
	// fdReserve what it keeps for everything else; its descriptor limit
	// then caps how many containers it takes.
	fdsPerContainer = 10
	fdReserve       = 256
	// maxSupervisors bounds the supervisors of one root.
	maxSupervisors = 64
	// supervisorStartTimeout bounds how long a new supervisor may take to
	// report that it serves.
	supervisorStartTimeout = 30 * time.Second
	// supervisorLogMax is the size past which a supervisor's log is
	// emptied as a new supervisor starts.
	supervisorLogMax = 1 << 20
)

// Supervisor requests.
const (
	opStart = "start"
	opWait  = "wait"
)

// supervisorRequest is a request to a supervisor.
type supervisorRequest struct {
	Proto int    `json:"proto"`
	Op    string `json:"op"`
	ID    string `json:"id"`
	// The output's limits, CRI log and flags (start).
	MaxSize  int64  `json:"max_size,omitempty"`
	MaxFiles int    `json:"max_files,omitempty"`
	CRILog   string `json:"cri_log,omitempty"`
	Flags    string `json:"flags,omitempty"`
}

func (r *Runtime) supervisorDir(n int) string {
	return filepath.Join(r.root, supervisorDir, strconv.Itoa(n))
}

// supervisor is a running supervisor's state.
type supervisor struct {
	r    *Runtime
	dir  string
	l    *net.UnixListener
	max  int
	quit chan struct{}

	mu sync.Mutex
	// busy counts the connections and jobs under way; idle runs
	// tryQuit once there have been none for supervisorIdle.
	busy     int
	idle     *time.Timer
	quitting bool
	// jobs are the containers whose exit is not yet recorded, each with
	// the channel closed once it is (and the monitor lock released).
	jobs map[string]chan struct{}
}

// runSupervisor is a supervisor process: args are the state root, the
// supervisor's number, and how many containers it takes at most (0: as
// many as its descriptor limit allows).
func runSupervisor(args []string) int {
	ready := os.NewFile(fdReady, "ready")
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "berth supervisor:", err)
		b, _ := json.Marshal(monitorStatus{Error: err.Error(), Class: errclass.Name(errclass.Ensure(err))})
		_, _ = ready.Write(b)
		ready.Close()
		return 1
	}
	if len(args) != 3 {
		return fail(errors.New("bad arguments"))
	}
	share, err := strconv.Atoi(args[2])
	if err != nil || share < 0 {
		return fail(fmt.Errorf("bad share %q", args[2]))
	}
	n, err := strconv.Atoi(args[1])
	if err != nil || n < 0 || n >= maxSupervisors {
		return fail(fmt.Errorf("bad supervisor number %q", args[1]))
	}
	r, err := Open(args[0])
	if err != nil {
		return fail(err)
	}
	s := &supervisor{r: r, dir: r.supervisorDir(n), quit: make(chan struct{}), jobs: map[string]chan struct{}{}}
	unlock, err := fsutil.LockFile(filepath.Join(s.dir, supervisorLock), fsutil.LockOptions{NoWait: true})
	if err != nil {
		return fail(fmt.Errorf("supervisor %d lives already, or its lock: %w", n, err))
	}
	defer unlock()
	_ = os.Remove(filepath.Join(s.dir, supervisorSock))
	path, done, err := inDir(s.dir, supervisorSock)
	if err != nil {
		return fail(err)
	}
	l, err := net.Listen("unix", path)
	done()
	if err != nil {
		return fail(err)
	}
	s.l = l.(*net.UnixListener)
	s.l.SetUnlinkOnClose(false) // by path, as it quits (tryQuit)
	if err := os.Chmod(filepath.Join(s.dir, supervisorSock), 0o600); err != nil {
		return fail(err)
	}
	// What the supervisor allocates is mostly kept for its containers'
	// lives, and little churns (the copies' buffers are pooled): a
	// tighter collector costs little and keeps its memory near what it
	// keeps.
	debug.SetGCPercent(25)
	spareThreads(supervisorThreads)
	s.max = containersFor(fdLimit())
	if share > 0 {
		s.max = min(s.max, share)
	}
	b, _ := json.Marshal(monitorStatus{Proto: supervisorProto})
	_, _ = ready.Write(b)
	ready.Close()
	s.mu.Lock()
	s.idleLocked()
	s.mu.Unlock()
	s.serve()
	return 0
}

// supervisorThreads is how many threads a supervisor makes as it starts
// and keeps idle.
const supervisorThreads = 16

// spareThreads has the Go runtime make n threads now, which it then keeps
// idle for when goroutines block in system calls: a Go process that
// cannot make a thread when it needs one crashes, and a tenant's fork bomb
// may have taken every pid of the host by then. (A thread a goroutine
// locked and let go of is kept; only one locked at the goroutine's end is
// destroyed.)
func spareThreads(n int) {
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			goruntime.LockOSThread()
			defer goruntime.UnlockOSThread()
			// Held in a system call, so that each goroutine
			// holds a thread of its own at once.
			_ = unix.Nanosleep(&unix.Timespec{Nsec: 20e6}, nil)
		}()
	}
	wg.Wait()
}

// fdLimit is this process's descriptor limit (Go raises the soft limit to
// the hard one as it starts).
func fdLimit() uint64 {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 1024
	}
	return rl.Cur
}

// containersFor is how many containers a supervisor with a descriptor
// limit of n takes.
func containersFor(n uint64) int {
	if n <= fdReserve+fdsPerContainer {
		return 1
	}
	return int((n - fdReserve) / fdsPerContainer)
}

// serve answers connections until the supervisor quits.
func (s *supervisor) serve() {
	for {
		conn, err := s.l.AcceptUnix()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			time.Sleep(10 * time.Millisecond) // out of descriptors, say
			continue
		}
		if !s.enter() {
			// Accepted as it quits: closed unread, which the client
			// sees as a supervisor gone before taking its request, and
			// tries again (it waits for the start lock, which this one
			// holds until it exits).
			conn.Close()
			continue
		}
		go func() {
			defer s.leave()
			// One container's failure is not all of them: a
			// panic ends that request (and its job) alone.
			defer func() {
				if p := recover(); p != nil {
					fmt.Fprintf(os.Stderr, "berth supervisor: panic: %v\n%s", p, debug.Stack())
				}
			}()
			s.handle(conn)
		}()
	}
}

// enter counts a connection under way, unless the supervisor quits.
func (s *supervisor) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.quitting {
		return false
	}
	s.busy++
	if s.idle != nil {
		s.idle.Stop()
		s.idle = nil
	}
	return true
}

func (s *supervisor) leave() {
	s.mu.Lock()
	s.busy--
	s.idleLocked()
	s.mu.Unlock()
}

// idleLocked arms the idle timer when nothing is under way.
func (s *supervisor) idleLocked() {
	if s.busy == 0 && !s.quitting && s.idle == nil {
		s.idle = time.AfterFunc(supervisorIdle, s.tryQuit)
	}
}

// tryQuit quits if still idle: under the start lock, the socket goes and
// the listener closes, so that a client either reached this supervisor
// before (and keeps it busy) or finds no socket and starts another. A
// client that connected just before is reset, before anything was done
// for it, and tries again. A supervisor that quits keeps the start lock
// until it exits, with its own lock: a new one started before would find
// that lock still held and fail.
func (s *supervisor) tryQuit() {
	unlock, err := fsutil.LockFile(filepath.Join(filepath.Dir(s.dir), supervisorStartLock), fsutil.LockOptions{NoWait: true})
	s.mu.Lock()
	defer s.mu.Unlock()
	s.idle = nil
	if errors.Is(err, unix.EWOULDBLOCK) {
		// Another is being started: try again later.
		s.idleLocked()
		return
	}
	// Any other error is a root removed: nobody can reach this
	// supervisor any more.
	if s.busy > 0 || s.quitting {
		if err == nil {
			unlock()
		}
		return
	}
	// Quitting: the start lock is released by the process's exit.
	s.quitting = true
	_ = os.Remove(filepath.Join(s.dir, supervisorSock))
	s.l.Close()
}

// handle serves one connection.
func (s *supervisor) handle(conn *net.UnixConn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(requestTimeout))
	line, files, err := readRequest(conn)
	if err != nil {
		closeAll(files)
		writeStatus(conn, monitorStatus{Error: err.Error(), Class: errclass.Name(errclass.Ensure(err))})
		return
	}
	var req supervisorRequest
	if err := json.Unmarshal(line, &req); err != nil {
		closeAll(files)
		writeStatus(conn, statusOf(fmt.Errorf("bad request: %w", errdefs.ErrInvalidArgument)))
		return
	}
	if req.Op != opStart {
		closeAll(files)
		files = nil
	}
	switch {
	case req.Proto != supervisorProto:
		closeAll(files)
		writeStatus(conn, statusOf(fmt.Errorf("supervisor speaks protocol %d, not %d (another berth started it; it quits once its containers are gone): %w", supervisorProto, req.Proto, errdefs.ErrFailedPrecondition)))
	case !validID(req.ID):
		closeAll(files)
		writeStatus(conn, statusOf(fmt.Errorf("bad container ID %q: %w", req.ID, errdefs.ErrInvalidArgument)))
	case req.Op == opStart:
		s.start(conn, req, files)
	case req.Op == opWait:
		s.wait(conn, req.ID)
	default:
		writeStatus(conn, statusOf(fmt.Errorf("unknown request %q: %w", req.Op, errdefs.ErrInvalidArgument)))
	}
}

// validID is a container ID as the runtime makes them: one path element.
func validID(id string) bool {
	return id != "" && id != "." && id != ".." && !strings.ContainsAny(id, "/\x00") && len(id) <= 1024
}

// start runs a container's job; its answer goes on conn.
func (s *supervisor) start(conn *net.UnixConn, req supervisorRequest, files []*os.File) {
	if len(files) != 3 {
		closeAll(files)
		writeStatus(conn, statusOf(fmt.Errorf("a start carries 3 descriptors, not %d: %w", len(files), errdefs.ErrInvalidArgument)))
		return
	}
	spec := outputSpec{criLog: req.CRILog}
	spec.limits.MaxSize, spec.limits.MaxFiles = req.MaxSize, req.MaxFiles
	if err := spec.setFlags(req.Flags); err != nil {
		closeAll(files)
		writeStatus(conn, statusOf(fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)))
		return
	}
	s.mu.Lock()
	if len(s.jobs) >= s.max {
		s.mu.Unlock()
		closeAll(files)
		writeStatus(conn, monitorStatus{Full: true})
		return
	}
	if _, ok := s.jobs[req.ID]; ok {
		s.mu.Unlock()
		closeAll(files)
		writeStatus(conn, statusOf(fmt.Errorf("container %s is supervised already: %w", req.ID, errdefs.ErrAlreadyExists)))
		return
	}
	exited := make(chan struct{})
	s.jobs[req.ID] = exited
	s.mu.Unlock()
	_ = conn.SetDeadline(time.Time{})
	report := func(st monitorStatus) bool {
		_ = conn.SetWriteDeadline(time.Now().Add(requestTimeout))
		ok := writeStatus(conn, st)
		conn.Close()
		return ok
	}
	var once sync.Once
	done := func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.jobs, req.ID)
			s.mu.Unlock()
			close(exited)
		})
	}
	runJob(s.r.dir(req.ID), s.r.runcRoot(), req.ID, spec, files[0], files[1], files[2], report, done)
}

// wait answers once container id's job is over (at once if this
// supervisor has none), or when the client goes.
func (s *supervisor) wait(conn *net.UnixConn, id string) {
	s.mu.Lock()
	exited := s.jobs[id]
	s.mu.Unlock()
	if exited != nil {
		_ = conn.SetDeadline(time.Time{})
		gone := make(chan struct{})
		go func() {
			_, _ = io.Copy(io.Discard, conn)
			close(gone)
		}()
		select {
		case <-exited:
		case <-gone:
			return
		}
	}
	_ = conn.SetWriteDeadline(time.Now().Add(requestTimeout))
	writeStatus(conn, monitorStatus{})
}

// readRequest reads a request's line and the descriptors sent with it.
func readRequest(conn *net.UnixConn) ([]byte, []*os.File, error) {
	buf := make([]byte, requestMax)
	oob := make([]byte, unix.CmsgSpace(4*4))
	var files []*os.File
	n := 0
	for {
		k, oobn, _, _, err := conn.ReadMsgUnix(buf[n:], oob)
		if oobn > 0 {
			fs, perr := parseRights(oob[:oobn])
			files = append(files, fs...)
			if perr != nil {
				return nil, files, perr
			}
			if len(files) > 3 {
				// A start carries three streams; more would eat the
				// descriptors every container's job needs.
				return nil, files, fmt.Errorf("%d descriptors sent, at most 3: %w", len(files), errdefs.ErrInvalidArgument)
			}
		}
		n += k
		if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
			return buf[:i], files, nil
		}
		if err != nil {
			return nil, files, fmt.Errorf("read request: %w", err)
		}
		if n == len(buf) {
			return nil, files, fmt.Errorf("request longer than %d bytes: %w", requestMax, errdefs.ErrInvalidArgument)
		}
	}
}

// parseRights turns the descriptors in a control message into files.
func parseRights(oob []byte) ([]*os.File, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("control message: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "stdio"))
		}
	}
	return files, nil
}

func statusOf(err error) monitorStatus {
	return monitorStatus{Error: err.Error(), Class: errclass.Name(errclass.Ensure(err))}
}

func writeStatus(conn net.Conn, st monitorStatus) bool {
	b, _ := json.Marshal(st)
	_, err := conn.Write(append(b, '\n'))
	return err == nil
}

// superviseInit has a supervisor create the container's init and keep it,
// and returns the supervisor's number and answer (the init's pid and start
// time). The job's files are written in the container's directory first.
func (r *Runtime) superviseInit(ctx context.Context, id string, cfg *configs.Config, proc *specs.Process, pio driver.IO, out outputSpec) (int, monitorStatus, error) {
	dir := r.dir(id)
	if err := writeMonitorJob(dir, cfg, proc); err != nil {
		return 0, monitorStatus{}, err
	}
	stdio, copyWG, closeAfter, err := r.containerStdio(dir, pio)
	defer closeAll(closeAfter)
	if err != nil {
		return 0, monitorStatus{}, err
	}
	req := supervisorRequest{Proto: supervisorProto, Op: opStart, ID: id, MaxSize: out.limits.MaxSize, MaxFiles: out.limits.MaxFiles, CRILog: out.criLog, Flags: out.flags()}
	r.mu.Lock()
	first := r.supervisor
	r.mu.Unlock()
	for i := range maxSupervisors {
		n := (first + i) % maxSupervisors
		st, err := r.askSupervisor(ctx, n, req, stdio[:])
		if err != nil {
			return 0, monitorStatus{}, err
		}
		if st.Full {
			continue
		}
		if st.Error != "" {
			return 0, monitorStatus{}, fmt.Errorf("%s: %w", st.Error, errclass.FromName(st.Class))
		}
		r.mu.Lock()
		r.supervisor = n
		if copyWG != nil {
			r.copies[id] = copyWG
		}
		r.mu.Unlock()
		return n, st, nil
	}
	return 0, monitorStatus{}, fmt.Errorf("all %d supervisors of %s are full: %w", maxSupervisors, r.root, errdefs.ErrResourceExhausted)
}

// askSupervisor sends a start to supervisor n, started if it is not
// running, and returns its answer. A supervisor that quit as this
// connected did nothing for it: it is asked again.
func (r *Runtime) askSupervisor(ctx context.Context, n int, req supervisorRequest, files []*os.File) (monitorStatus, error) {
	b, _ := json.Marshal(req)
	b = append(b, '\n')
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	var lastErr error
	for range 3 {
		conn, err := r.dialSupervisor(ctx, n, true)
		if err != nil {
			return monitorStatus{}, err
		}
		st, got, err := exchange(ctx, conn, b, unix.UnixRights(fds...))
		conn.Close()
		if err == nil {
			return st, nil
		}
		if got || ctx.Err() != nil {
			// The supervisor took the request and went away: what it
			// did is unknown.
			if ctx.Err() != nil {
				return monitorStatus{}, ctx.Err()
			}
			return monitorStatus{}, fmt.Errorf("supervisor %d went away while starting the container: %w (its log: %s): %w", n, err, filepath.Join(r.supervisorDir(n), supervisorLogFile), errdefs.ErrUnavailable)
		}
		lastErr = err
	}
	return monitorStatus{}, fmt.Errorf("supervisor %d: %w: %w", n, lastErr, errdefs.ErrUnavailable)
}

// exchange sends a request and reads its answer. got says whether the
// supervisor took the request (read it): a connection reset before that
// is a supervisor that quit.
func exchange(ctx context.Context, conn *net.UnixConn, req, oob []byte) (st monitorStatus, got bool, err error) {
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, _, err := conn.WriteMsgUnix(req, oob, nil); err != nil {
		return st, false, err
	}
	line, err := readLine(bufio.NewReader(conn), 1<<20)
	if err != nil {
		// A supervisor that quit as this connected resets the
		// connection it never took; one that took the request and
		// died closes it.
		return st, !errors.Is(err, syscall.ECONNRESET), err
	}
	if err := json.Unmarshal(line, &st); err != nil {
		return st, true, fmt.Errorf("answer %q: %w", line, errdefs.ErrUnknown)
	}
	return st, true, nil
}

// dialSupervisor connects to supervisor n; with start, one is started if
// none listens.
func (r *Runtime) dialSupervisor(ctx context.Context, n int, start bool) (*net.UnixConn, error) {
	dir := r.supervisorDir(n)
	dial := func() (*net.UnixConn, error) {
		path, done, err := inDir(dir, supervisorSock)
		if err != nil {
			return nil, err
		}
		defer done()
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", path)
		if err != nil {
			return nil, err
		}
		return c.(*net.UnixConn), nil
	}
	absent := func(err error) bool {
		return errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, os.ErrNotExist)
	}
	c, err := dial()
	if err == nil || !start || !absent(err) {
		return c, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	unlock, err := fsutil.LockFileContext(ctx, filepath.Join(filepath.Dir(dir), supervisorStartLock), fsutil.LockOptions{})
	if err != nil {
		return nil, err
	}
	defer unlock()
	if c, err := dial(); err == nil || !absent(err) {
		return c, err
	}
	if err := r.spawnSupervisor(ctx, n); err != nil {
		return nil, err
	}
	return dial()
}

// spawnSupervisor starts supervisor n (the start lock is held) and returns
// once it serves. One that has not said so within supervisorStartTimeout,
// or when ctx ends, is killed.
func (r *Runtime) spawnSupervisor(ctx context.Context, n int) error {
	dir := r.supervisorDir(n)
	logPath := filepath.Join(dir, supervisorLogFile)
	if fi, err := os.Stat(logPath); err == nil && fi.Size() > supervisorLogMax {
		_ = os.Truncate(logPath, 0)
	}
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer readyR.Close()
	exe, name, release, err := r.supervisorBinary()
	if err != nil {
		return err
	}
	defer release()
	cmd := exec.Command(exe, supervisorArg, r.root, strconv.Itoa(n), strconv.Itoa(r.supervisorShare))
	cmd.Args[0] = name
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = log, log
	cmd.ExtraFiles = []*os.File{readyW}
	// Its own session: the caller's terminal signals and exit do not
	// reach the supervisor or the containers.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		return fmt.Errorf("start supervisor: %w", classify(err))
	}
	// Reaped whenever it ends, so that it does not linger as a zombie of
	// a long-lived caller.
	go func() { _ = cmd.Wait() }()
	_ = readyR.SetReadDeadline(time.Now().Add(supervisorStartTimeout))
	stop := context.AfterFunc(ctx, func() { _ = readyR.SetReadDeadline(time.Unix(1, 0)) })
	b, err := io.ReadAll(io.LimitReader(readyR, 1<<20))
	stop()
	if err != nil {
		_ = cmd.Process.Kill()
		if ctx.Err() != nil {
			return fmt.Errorf("supervisor %d (%s) starting: %w", n, name, ctx.Err())
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("supervisor %d (%s) did not report within %s: %w", n, name, supervisorStartTimeout, errdefs.ErrUnavailable)
		}
		return fmt.Errorf("supervisor %d: %w", n, err)
	}
	var st monitorStatus
	if err := json.Unmarshal(b, &st); err != nil {
		tail, _ := os.ReadFile(logPath)
		if len(tail) > 4096 {
			tail = tail[len(tail)-4096:]
		}
		var class error = errdefs.ErrUnknown
		if exe != "/proc/self/exe" {
			// The binary named is not a supervisor.
			class = errdefs.ErrFailedPrecondition
		}
		_ = cmd.Process.Kill()
		return fmt.Errorf("supervisor %d (%s) failed as it started: %s: %w", n, name, strings.TrimSpace(string(tail)), class)
	}
	if st.Error != "" {
		return fmt.Errorf("supervisor %d: %s: %w", n, st.Error, errclass.FromName(st.Class))
	}
	if st.Proto != supervisorProto {
		// Another berth's supervisor: it serves (its lock is held and
		// its socket bound) but would refuse every request. It is told
		// to go; the socket is another's to take once it has.
		_ = cmd.Process.Kill()
		return fmt.Errorf("supervisor %d (%s) speaks protocol %d, this berth %d: build the supervisor binary with this program: %w", n, name, st.Proto, supervisorProto, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// supervisorBinary returns the path a new supervisor is executed from
// (/proc/self/exe, or a copy of the descriptor WithSupervisorBinary
// opened, to release once it is started) and its name for argv[0].
func (r *Runtime) supervisorBinary() (path, name string, release func(), err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.supervisorExe == nil {
		return "/proc/self/exe", os.Args[0], func() {}, nil
	}
	// Above the descriptors the child is given (0-3), which it sets
	// before it executes this path.
	fd, err := unix.FcntlInt(r.supervisorExe.Fd(), unix.F_DUPFD_CLOEXEC, 16)
	if err != nil {
		return "", "", nil, classify(err)
	}
	return "/proc/self/fd/" + strconv.Itoa(fd), r.supervisorExe.Name(), func() { unix.Close(fd) }, nil
}

// supervisorWait returns once supervisor n has no job for container id
// any more (its exit is recorded), or ctx ends, or the supervisor cannot
// be asked (then the caller watches the monitor lock).
func (r *Runtime) supervisorWait(ctx context.Context, n int, id string) error {
	conn, err := r.dialSupervisor(ctx, n, false)
	if err != nil {
		return err
	}
	defer conn.Close()
	b, _ := json.Marshal(supervisorRequest{Proto: supervisorProto, Op: opWait, ID: id})
	st, _, err := exchange(ctx, conn, append(b, '\n'), nil)
	if err != nil {
		return err
	}
	if st.Error != "" {
		return fmt.Errorf("%s: %w", st.Error, errclass.FromName(st.Class))
	}
	return nil
}
