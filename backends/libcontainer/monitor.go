package libcontainer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	lc "github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/crilog"
	"github.com/berthrun/berth/internal/errclass"
	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/internal/logfile"
	"github.com/berthrun/berth/internal/phase"
	"github.com/berthrun/berth/runtime/driver"
)

// Files in a container's directory.
const (
	exitFile    = "exit.json"
	logFile     = "container.log"
	lockFile    = "monitor.lock"
	monLogFile  = "monitor.log"
	configFile  = "libcontainer.json"
	processFile = "process.json"
)

// monitorStatus is what the monitor reports once the init is created.
type monitorStatus struct {
	Pid   int    `json:"pid,omitempty"`
	Error string `json:"error,omitempty"`
	Class string `json:"class,omitempty"`
}

// Descriptors handed to the monitor, in this order after stdio.
const (
	fdStatus = 3 + iota
	fdStdin
	fdStdout
	fdStderr
)

// runMonitor is the monitor process: create the init, report, wait for it,
// record its exit. args: container dir, libcontainer root, ID, the log's
// limits and the CRI log's path.
func runMonitor(args []string) int {
	dir, runcRoot, id, spec, err := parseMonitorArgs(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "berth monitor:", err)
		return 2
	}
	status := os.NewFile(fdStatus, "status")
	report := func(st monitorStatus) bool {
		b, _ := json.Marshal(st)
		_, err := status.Write(b)
		status.Close()
		return err == nil
	}
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "berth monitor:", err)
		report(monitorStatus{Error: err.Error(), Class: errclass.Name(classify(err))})
		return 1
	}
	// The lock stays held until this process exits: that is how others
	// know the monitor lives.
	unlock, err := lockMonitor(dir)
	if err != nil {
		return fail(err)
	}
	// Unlocked once the exit is recorded and the output copied, or on
	// return; the defer also keeps the file from being finalized, and
	// unlocked, earlier. (A second unlock does nothing.)
	defer unlock()
	cfg, proc, err := readMonitorJob(dir)
	if err != nil {
		return fail(err)
	}
	stdin, stdout, stderr := os.NewFile(fdStdin, "stdin"), os.NewFile(fdStdout, "stdout"), os.NewFile(fdStderr, "stderr")
	// The container writes into pipes (or a terminal) that this process
	// copies into its capped log and on to the caller's stdout and stderr.
	// The CRI log's failures go to the monitor's own log.
	spec.report = func(err error) { fmt.Fprintln(os.Stderr, "berth monitor:", err) }
	k, err := startKept(dir, runcRoot, id, cfg, proc, spec, stdin, stdout, stderr)
	if !proc.Terminal || err != nil {
		// The init holds its own copy; with a terminal, the copy into
		// it reads this one.
		stdin.Close()
	}
	if err != nil {
		return fail(err)
	}
	pid, _ := k.p.Pid()
	if !report(monitorStatus{Pid: pid}) {
		// The caller is gone before learning of the container: nobody
		// will ever start it, so do not leave it behind.
		_ = k.c.Signal(unix.SIGKILL)
		_, _ = k.p.Wait()
		k.tee.Finish(outputIdle, outputMost)
		_ = k.c.Destroy()
		return 1
	}
	code := monitorInit(dir, k.c, k.p, k.tee)
	// Wait returns once the lock is released: the attachments have what
	// is left of the output after that.
	unlock()
	k.srv.drain()
	return code
}

// parseMonitorArgs reads the monitor's arguments: container dir,
// libcontainer root, ID, the log's limits, the CRI log's path (empty for
// none) and the output's flags (outputSpec.flags).
func parseMonitorArgs(args []string) (dir, runcRoot, id string, out outputSpec, err error) {
	if len(args) != 7 {
		return "", "", "", out, errors.New("bad arguments")
	}
	maxSize, err1 := strconv.ParseInt(args[3], 10, 64)
	maxFiles, err2 := strconv.Atoi(args[4])
	if err1 != nil || err2 != nil {
		return "", "", "", out, errors.New("bad log limits")
	}
	out = outputSpec{limits: logfile.Limits{MaxSize: maxSize, MaxFiles: maxFiles}, criLog: args[5]}
	if err := out.setFlags(args[6]); err != nil {
		return "", "", "", out, err
	}
	return args[0], args[1], args[2], out, nil
}

// readMonitorJob reads the container's libcontainer config and process,
// which spawnMonitor wrote in its directory.
func readMonitorJob(dir string) (*configs.Config, *specs.Process, error) {
	var cfg configs.Config
	if err := fsutil.ReadJSON(filepath.Join(dir, configFile), &cfg); err != nil {
		return nil, nil, err
	}
	var proc specs.Process
	if err := fsutil.ReadJSON(filepath.Join(dir, processFile), &proc); err != nil {
		return nil, nil, err
	}
	return &cfg, &proc, nil
}

// monitorInit waits for the reported init, records its exit, and lets the
// copy of its output end: the monitor's exit code.
func monitorInit(dir string, c *lc.Container, p *lc.Process, tee *logfile.Tee) int {
	err := recordExit(dir, c, p)
	// The exit is known; the output is copied to its end before the
	// monitor goes (Wait returns once it has).
	tee.Finish(outputIdle, outputMost)
	if err != nil {
		fmt.Fprintln(os.Stderr, "berth monitor:", err)
		return 1
	}
	return 0
}

// outputIdle is how long the copy of an exited process's output (a
// container's init, an exec'd process) may make no progress before it is
// cut, and outputMost how long it may go on in all after the exit, so that
// a process left behind holding the output, or writing on, never holds up
// the Wait (see logfile.Tee.Finish).
const (
	outputIdle = 2 * time.Second
	outputMost = 10 * time.Second
)

// outputSpec is where a container's output goes besides the caller's
// writers, and how its standard input is kept.
type outputSpec struct {
	// limits cap the kept log.
	limits logfile.Limits
	// criLog, when set, is the CRI log's path; report tells its write
	// failures.
	criLog string
	report func(error)
	// same: the caller gave one writer for both streams, whose order one
	// pipe keeps (attachments then get both as stdout).
	same bool
	// openStdin keeps the init's standard input open for attachments;
	// stdinOnce closes it at the end of the first one's input.
	openStdin, stdinOnce bool
	// phases, when set, records how long startKept's steps take
	// (internal/phase; the monitor process has none).
	phases *phase.Recorder
}

// flags are the spec's switches as the monitor's last argument.
func (o outputSpec) flags() string {
	var f []string
	for _, x := range []struct {
		on   bool
		name string
	}{{o.same, "same"}, {o.openStdin, "open-stdin"}, {o.stdinOnce, "stdin-once"}} {
		if x.on {
			f = append(f, x.name)
		}
	}
	return "flags:" + strings.Join(f, ",")
}

func (o *outputSpec) setFlags(s string) error {
	list, ok := strings.CutPrefix(s, "flags:")
	if !ok {
		return errors.New("bad flags")
	}
	for _, f := range strings.Split(list, ",") {
		switch f {
		case "":
		case "same":
			o.same = true
		case "open-stdin":
			o.openStdin = true
		case "stdin-once":
			o.stdinOnce = true
		default:
			return fmt.Errorf("unknown flag %q", f)
		}
	}
	return nil
}

// kept is a container's init, created and waiting on its exec FIFO, whose
// output is copied by tee.
type kept struct {
	c   *lc.Container
	p   *lc.Process
	tee *logfile.Tee
	// srv serves the control socket: once the copy ended and the exit is
	// known, srv.drain lets the attachments take the end of the output.
	srv *controlServer
}

// startKept creates the container in libcontainer and its init, whose
// output this process keeps: pipes (or, with a terminal, the terminal's
// master) it copies into the container's capped log, into its CRI log
// when it has one, to attachments, and to stdout and stderr (the caller's
// streams; nil: none). The init reads stdin, unless its standard input is
// kept open for attachments; with a terminal this process types stdin
// into it. The control socket (control.go) is served until the copy ends
// (tee.Finish).
//
// With one writer for both streams (spec.same), one pipe keeps the order
// of the writes; but a CRI log and attachments tell the streams apart, so
// a CRI log takes a pipe each, and their writes to the one writer take
// turns.
func startKept(dir, runcRoot, id string, cfg *configs.Config, proc *specs.Process, spec outputSpec, stdin io.Reader, stdout, stderr io.Writer) (*kept, error) {
	sp := spec.phases.Begin()
	var undo []func()
	fail := func(err error) (*kept, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return nil, err
	}
	log, err := logfile.Create(filepath.Join(dir, logFile), spec.limits)
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { log.Close() })
	ctl := &controlled{fan: logfile.NewFanout(), attaching: make(chan struct{}, maxAttach)}
	if spec.criLog != "" {
		cri, err := crilog.Open(spec.criLog, spec.report)
		if err != nil {
			return fail(err)
		}
		ctl.cri = cri
		undo = append(undo, func() { cri.Close() })
	}
	srv, err := listenControl(dir)
	if err != nil {
		return fail(err)
	}
	undo = append(undo, srv.close)

	// The init's ends, closed once it holds its own copies: ours would
	// keep the pipes from ever ending.
	var theirs []*os.File
	undo = append(undo, func() { closeAll(theirs) })
	pipe := func() (r, w *os.File, err error) {
		if r, w, err = os.Pipe(); err == nil {
			undo = append(undo, func() { r.Close(); w.Close() })
		}
		return r, w, err
	}
	np := nativeProcess(proc, true)
	var console, outR, errR, inW *os.File
	if proc.Terminal {
		ours, init, err := consoleSocket()
		if err != nil {
			return fail(err)
		}
		undo = append(undo, func() { ours.Close() })
		console, np.ConsoleSocket = ours, init
		theirs = append(theirs, init)
	} else {
		var outW, errW, inR *os.File
		if outR, outW, err = pipe(); err != nil {
			return fail(err)
		}
		np.Stdout, np.Stderr = outW, outW
		theirs = append(theirs, outW)
		if !spec.same || ctl.cri != nil {
			if errR, errW, err = pipe(); err != nil {
				return fail(err)
			}
			np.Stderr = errW
			theirs = append(theirs, errW)
		}
		np.Stdin = stdin
		if spec.openStdin {
			if inR, inW, err = pipe(); err != nil {
				return fail(err)
			}
			np.Stdin = inR
			theirs = append(theirs, inR)
		}
	}
	sp.Mark("create.init/output")
	c, err := lc.Create(runcRoot, id, cfg)
	if err != nil {
		return fail(err)
	}
	sp.Mark("create.init/lc.Create")
	if err := c.Start(np); err != nil {
		_ = c.Destroy()
		return fail(err)
	}
	sp.Mark("create.init/lc.Start")
	closeAll(theirs)
	theirs = nil
	var masterR *os.File
	if console != nil {
		ctl.master, err = recvMaster(console)
		console.Close()
		if err == nil {
			if masterR, err = masterReader(ctl.master); err != nil {
				ctl.master.Close()
			}
		}
		if err != nil {
			_ = c.Signal(unix.SIGKILL)
			_, _ = np.Wait()
			_ = c.Destroy()
			return fail(err)
		}
	}

	// Nothing fails from here on: the copies own the read ends.
	criStream := func(name string) io.WriteCloser {
		if ctl.cri == nil {
			return nil
		}
		return ctl.cri.Stream(name)
	}
	if ctl.cri != nil && spec.same && !proc.Terminal {
		var mu sync.Mutex
		stdout, stderr = lockedWriter(&mu, stdout), lockedWriter(&mu, stderr)
	}
	tee := logfile.NewTee(log)
	var feed *stdinFeed
	ownFeed := false
	if ctl.master != nil {
		tee.CopyAlso(masterR, keepGoing(stdout), criStream(crilog.Stdout), ctl.fan.Stream(streamStdout))
		if spec.openStdin || stdin != nil {
			feed = newStdinFeed(ctl.master, false, false)
			if !spec.openStdin {
				go feed.copyFrom(stdin)
			}
		}
	} else {
		tee.CopyAlso(outR, stdout, criStream(crilog.Stdout), ctl.fan.Stream(streamStdout))
		if errR != nil {
			tee.CopyAlso(errR, stderr, criStream(crilog.Stderr), ctl.fan.Stream(streamStderr))
		}
		if inW != nil {
			feed, ownFeed = newStdinFeed(inW, spec.stdinOnce, true), true
		}
	}
	if spec.openStdin {
		ctl.stdin = feed
	}
	srv.serve(ctl)
	tee.OnFinish(func() {
		srv.close()
		if ctl.master != nil {
			// The init has exited (or the output was cut): the
			// terminal goes, and a write into it under way ends.
			ctl.master.Close()
		}
		if feed != nil {
			feed.stop(ownFeed)
		}
		ctl.closeCRILog()
		log.Close()
	})
	return &kept{c: c, p: np, tee: tee, srv: srv}, nil
}

// lockedWriter is w, or nil, whose writes take turns with those of the
// other writers locked by mu.
func lockedWriter(mu *sync.Mutex, w io.Writer) io.Writer {
	if w == nil {
		return nil
	}
	return &locked{mu: mu, w: w}
}

type locked struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *locked) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// startAttached runs the monitor's job in this process: it becomes the
// init's parent and records its exit.
func (r *Runtime) startAttached(id string, cfg *configs.Config, proc *specs.Process, pio driver.IO, spec outputSpec) error {
	dir := r.dir(id)
	lockf, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	lockf.Close()
	unlock, err := lockMonitor(dir)
	if err != nil {
		return err
	}
	stdout, stderr, dups, err := noSigpipe(nilIfNil(pio.Stdout), nilIfNil(pio.Stderr))
	if err != nil {
		unlock()
		return err
	}
	spec.report = func(err error) { fmt.Fprintf(os.Stderr, "berth: container %s: %v\n", id, err) }
	k, err := startKept(dir, r.runcRoot(), id, cfg, proc, spec, pio.Stdin, stdout, stderr)
	if err != nil {
		closeAll(dups)
		unlock()
		return classify(err)
	}
	tee := k.tee
	tee.OnFinish(func() { closeAll(dups) })
	c, p := k.c, k.p
	exited := make(chan struct{})
	r.mu.Lock()
	r.exited[id] = exited
	r.mu.Unlock()
	go func() {
		if err := recordExit(dir, c, p); err != nil {
			fmt.Fprintf(os.Stderr, "berth: container %s: %v\n", id, err)
		}
		tee.Finish(outputIdle, outputMost)
		unlock()
		close(exited)
		k.srv.drain()
	}()
	return nil
}

// noSigpipe replaces writers that are this process's stdout or stderr by
// duplicates of them: a write to a broken pipe on descriptor 1 or 2 kills a
// Go program with SIGPIPE, on another it fails with EPIPE, which ends the
// copy and reaches the container as its own broken pipe.
func noSigpipe(stdout, stderr io.Writer) (io.Writer, io.Writer, []*os.File, error) {
	var dups []*os.File
	seen := map[*os.File]*os.File{}
	dup := func(w io.Writer) (io.Writer, error) {
		f, ok := w.(*os.File)
		if !ok || (f.Fd() != 1 && f.Fd() != 2) {
			return w, nil
		}
		if d, ok := seen[f]; ok {
			return d, nil
		}
		fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			return nil, fmt.Errorf("dup %s: %w", f.Name(), err)
		}
		d := os.NewFile(uintptr(fd), f.Name())
		seen[f] = d
		dups = append(dups, d)
		return d, nil
	}
	out, err := dup(stdout)
	if err != nil {
		return nil, nil, nil, err
	}
	errw, err := dup(stderr)
	if err != nil {
		closeAll(dups)
		return nil, nil, nil, err
	}
	return out, errw, dups, nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// nilIfNil turns a nil writer of any type into a nil interface.
func nilIfNil(w io.Writer) io.Writer {
	if f, ok := w.(*os.File); ok && f == nil {
		return nil
	}
	return w
}

// lockMonitor takes the container's monitor lock (the file must exist) until
// the returned function runs.
func lockMonitor(dir string) (func(), error) {
	return fsutil.LockFile(filepath.Join(dir, lockFile), fsutil.LockOptions{Existing: true})
}

// recordExit waits for the init of c and writes how it ended.
func recordExit(dir string, c *lc.Container, p *lc.Process) error {
	oom := oomCounter(c)
	ps, err := p.Wait()
	var ee *exec.ExitError
	if ps == nil && errors.As(err, &ee) {
		ps = ee.ProcessState
	}
	st := driver.ExitStatus{ExitedAt: time.Now().UTC(), Code: -1}
	if ps != nil {
		st = exitStatusOf(ps.Sys().(syscall.WaitStatus))
	} else {
		fmt.Fprintln(os.Stderr, "berth monitor: wait:", err)
	}
	if oom != nil {
		n, err := oom.OOMKillCount()
		st.OOMKilled = err == nil && n > 0
	}
	if err := fsutil.WriteJSON(filepath.Join(dir, exitFile), st); err != nil {
		return fmt.Errorf("record exit: %w", err)
	}
	return nil
}

// oomCounter returns the manager of c's cgroups, which counts the
// processes the kernel's OOM killer killed in them (nil if it cannot be
// had). The count is read once the init has exited, before Delete removes
// the cgroups.
func oomCounter(c *lc.Container) cgroups.Manager {
	st, err := c.State()
	if err != nil {
		return nil
	}
	m, err := manager.NewWithPaths(c.Config().Cgroups, st.CgroupPaths)
	if err != nil {
		return nil
	}
	return m
}

// monitorAlive reports whether the container's monitor holds its lock.
func (r *Runtime) monitorAlive(id string) bool {
	return fsutil.Locked(filepath.Join(r.dir(id), lockFile))
}

// waitMonitor returns once the container's monitor is gone (and so has
// recorded the init's exit), or ctx ends. It works from any process. The
// monitor is alive while it holds its lock; a monitor process is also
// watched through a pidfd so its exit is seen at once. The pidfd is trusted
// only while the lock is held, which rules out a reused pid.
func (r *Runtime) waitMonitor(ctx context.Context, id string, pid int) error {
	var fds []unix.PollFd
	if pid > 0 {
		pidfd, err := unix.PidfdOpen(pid, 0)
		if err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("pidfd_open monitor: %w", err)
		}
		if err == nil {
			defer unix.Close(pidfd)
			fds = []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		}
	}
	for r.monitorAlive(id) {
		if err := ctx.Err(); err != nil {
			return err
		}
		if fds == nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		n, err := unix.Poll(fds, 100)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll monitor: %w", err)
		}
		if n > 0 {
			return nil
		}
	}
	return nil
}
