package libcontainer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
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

// monitorStatus is what the supervisor reports once the init is created:
// its pid, or the error and its class; Full says the supervisor takes no
// more containers (another one must).
type monitorStatus struct {
	// Proto is a new supervisor's protocol version, in its ready report.
	Proto int `json:"proto,omitempty"`
	Pid   int `json:"pid,omitempty"`
	// Start is the init's start time (clock ticks since boot, as in
	// /proc/<pid>/stat), which with Pid names it for good.
	Start uint64 `json:"start,omitempty"`
	Error string `json:"error,omitempty"`
	Class string `json:"class,omitempty"`
	Full  bool   `json:"full,omitempty"`
}

// fdReady is the descriptor on which a new supervisor reports that it
// serves.
const fdReady = 3

// runJob is a container's monitor job, run by its supervisor
// (supervisor.go): create the init, report, wait for it, record its exit,
// copy its output to its end. stdin, stdout and stderr are the caller's
// streams (the job closes them); report tells the caller of the init, or
// of the failure, and says whether the caller got it; done runs once the
// exit is recorded and the monitor's lock released (Wait returns then),
// before the attachments are drained. runJob returns once all is over.
func runJob(dir, runcRoot, id string, spec outputSpec, stdin, stdout, stderr *os.File, report func(monitorStatus) bool, done func()) {
	// Also on a panic (the supervisor's other jobs go on): the lock is
	// released, then done runs (both may run twice).
	defer done()
	fail := func(err error) {
		if le := hostLimitError(err); le != nil {
			monitorLog(dir, err) // the whole story
			err = le
		}
		report(monitorStatus{Error: err.Error(), Class: errclass.Name(classify(err))})
		done()
	}
	closeOut := func() {
		stdout.Close()
		stderr.Close()
	}
	// The lock stays held until the exit is recorded and the output
	// copied: that is how others know the monitor lives.
	unlock, err := lockMonitor(dir)
	if err != nil {
		stdin.Close()
		closeOut()
		fail(err)
		return
	}
	defer unlock()
	cfg, proc, err := readMonitorJob(dir)
	if err != nil {
		stdin.Close()
		closeOut()
		unlock()
		fail(err)
		return
	}
	// The container writes into pipes (or a terminal) that this process
	// copies into its capped log and on to the caller's stdout and stderr.
	// The CRI log's failures go to the container's monitor log.
	spec.report = func(err error) { monitorLog(dir, err) }
	// Streams that go nowhere are not copied at all, and their
	// descriptors not held.
	var in io.Reader
	var out, errw io.Writer
	if !isDevNull(stdin) {
		in = stdin
	}
	if !isDevNull(stdout) {
		out = stdout
	}
	if !isDevNull(stderr) {
		errw = stderr
	}
	k, err := startKept(dir, runcRoot, id, cfg, proc, spec, in, out, errw)
	if !proc.Terminal || err != nil {
		// The init holds its own copy; with a terminal, the copy into
		// it reads this one, until the output ends.
		stdin.Close()
	} else {
		k.tee.OnFinish(func() { stdin.Close() })
	}
	if err != nil {
		closeOut()
		unlock()
		fail(err)
		return
	}
	if out == nil && errw == nil {
		closeOut()
	} else {
		k.tee.OnFinish(closeOut)
	}
	pid, _ := k.p.Pid()
	start, _ := procStartTime(pid)
	if !report(monitorStatus{Pid: pid, Start: start}) {
		// The caller is gone before learning of the container: nobody
		// will ever start it, so do not leave it behind.
		_ = k.c.Signal(unix.SIGKILL)
		_, _ = k.p.Wait()
		k.tee.Finish(outputIdle, outputMost)
		_ = k.c.Destroy()
		unlock()
		done()
		return
	}
	if err := recordExitOf(dir, k); err != nil {
		monitorLog(dir, err)
	}
	// The exit is known; the output is copied to its end before the
	// lock goes (Wait returns once it has).
	k.tee.Finish(outputIdle, outputMost)
	unlock()
	done()
	// The attachments have what is left of the output after that.
	k.srv.drain()
}

// isDevNull reports whether f is the null device.
func isDevNull(f *os.File) bool {
	var st, null unix.Stat_t
	return unix.Fstat(int(f.Fd()), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR &&
		unix.Stat(os.DevNull, &null) == nil && st.Rdev == null.Rdev
}

// monitorLog appends a line about err to the container's monitor log
// (monLogFile), opened for each line: a supervisor holds no descriptor
// per container for it.
func monitorLog(dir string, err error) {
	f, ferr := os.OpenFile(filepath.Join(dir, monLogFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND|unix.O_NOFOLLOW, 0o600)
	if ferr != nil {
		fmt.Fprintf(os.Stderr, "berth supervisor: %s: %v\n", filepath.Base(dir), err)
		return
	}
	fmt.Fprintf(f, "%s berth monitor: %v\n", time.Now().UTC().Format(time.RFC3339Nano), err)
	f.Close()
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
	// (internal/phase; a supervisor's job has none).
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
// init's parent and records its exit. It returns the init's pid and start
// time.
func (r *Runtime) startAttached(id string, cfg *configs.Config, proc *specs.Process, pio driver.IO, spec outputSpec) (monitorStatus, error) {
	dir := r.dir(id)
	lockf, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return monitorStatus{}, err
	}
	lockf.Close()
	unlock, err := lockMonitor(dir)
	if err != nil {
		return monitorStatus{}, err
	}
	stdout, stderr, dups, err := noSigpipe(nilIfNil(pio.Stdout), nilIfNil(pio.Stderr))
	if err != nil {
		unlock()
		return monitorStatus{}, err
	}
	spec.report = func(err error) { fmt.Fprintf(os.Stderr, "berth: container %s: %v\n", id, err) }
	k, err := startKept(dir, r.runcRoot(), id, cfg, proc, spec, pio.Stdin, stdout, stderr)
	if err != nil {
		closeAll(dups)
		unlock()
		return monitorStatus{}, classifyStart(err)
	}
	pid, _ := k.p.Pid()
	start, _ := procStartTime(pid)
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
	return monitorStatus{Pid: pid, Start: start}, nil
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
	if pid, err := p.Pid(); err == nil {
		awaitExit(pid)
	}
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
	return writeExit(dir, st, oom)
}

// writeExit records st, with the OOM killer's count from oom (nil: none).
func writeExit(dir string, st driver.ExitStatus, oom cgroups.Manager) error {
	if oom != nil {
		n, err := oom.OOMKillCount()
		st.OOMKilled = err == nil && n > 0
	}
	if err := fsutil.WriteJSON(filepath.Join(dir, exitFile), st); err != nil {
		return fmt.Errorf("record exit: %w", err)
	}
	return nil
}

// recordExitOf is recordExit for a supervisor, which keeps thousands of
// inits: the container and process objects of libcontainer (the whole
// config, seccomp profile included) are let go once the init runs, and its
// exit is reaped by pid, unless the init shares the host's PID namespace,
// whose processes libcontainer's Wait kills as the init exits.
func recordExitOf(dir string, k *kept) error {
	c, p := k.c, k.p
	if cfg := c.Config(); !cfg.Namespaces.Contains(configs.NEWPID) {
		return recordExit(dir, c, p)
	}
	pid, err := p.Pid()
	if err != nil {
		return recordExit(dir, c, p)
	}
	oom := oomCounter(c)
	k.c, k.p, c, p = nil, nil, nil, nil
	awaitExit(pid)
	var ws unix.WaitStatus
	for {
		_, err = unix.Wait4(pid, &ws, 0, nil)
		if err != unix.EINTR {
			break
		}
	}
	st := driver.ExitStatus{ExitedAt: time.Now().UTC(), Code: -1}
	if err == nil {
		st = exitStatusOf(syscall.WaitStatus(ws))
	} else {
		fmt.Fprintln(os.Stderr, "berth monitor: wait:", err)
	}
	return writeExit(dir, st, oom)
}

// awaitExit returns once process pid, a child of this process, has exited
// (or at once if that cannot be watched). It waits on a pidfd through the
// Go runtime's poller, so a supervisor waiting for thousands of inits
// holds no thread for each: a plain Wait would block one in wait4.
func awaitExit(pid int) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	// A pidfd polls readable once its process has exited; the check
	// leaves the zombie to Wait. An error (no poller for the file) ends
	// the wait here, and Wait blocks instead.
	_ = rc.Read(func(fd uintptr) bool {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		return err != nil || info.Signo != 0
	})
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

// waitMonitor returns once the container's monitor job is over (and so
// has recorded the init's exit), or ctx ends. It works from any process.
// The job is under way while the container's monitor lock is held; a
// supervised container's supervisor is asked to answer once the job is
// over, which parks no thread here; the lock is then checked, and watched
// for a container whose Attached owner keeps it, or whose supervisor
// cannot be asked.
func (r *Runtime) waitMonitor(ctx context.Context, id string, rec *record) error {
	if rec.Supervisor > 0 && r.monitorAlive(id) {
		if err := r.supervisorWait(ctx, rec.Supervisor-1, id); err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
	}
	for delay := time.Millisecond; r.monitorAlive(id); delay = min(2*delay, 20*time.Millisecond) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
	return nil
}
