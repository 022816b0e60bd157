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
	// Unlocked on return, after the exit is recorded; the defer also keeps
	// the file from being finalized, and unlocked, earlier.
	defer unlock()
	cfg, proc, err := readMonitorJob(dir)
	if err != nil {
		return fail(err)
	}
	stdin, stdout, stderr := os.NewFile(fdStdin, "stdin"), os.NewFile(fdStdout, "stdout"), os.NewFile(fdStderr, "stderr")
	// The container writes into pipes that this process copies into its
	// capped log and on to the caller's stdout and stderr.
	// The CRI log's failures go to the monitor's own log.
	spec.report = func(err error) { fmt.Fprintln(os.Stderr, "berth monitor:", err) }
	out, tee, err := keepOutput(dir, spec, stdout, stderr, sameFile(stdout, stderr))
	if err != nil {
		return fail(err)
	}
	c, p, err := startInit(runcRoot, id, cfg, proc, driver.IO{Stdin: stdin, Stdout: out.Stdout, Stderr: out.Stderr})
	// The init holds its own copies of the pipes' write ends; ours would
	// keep the copies from ever ending.
	out.close()
	stdin.Close()
	if err != nil {
		tee.Finish(0)
		return fail(err)
	}
	pid, _ := p.Pid()
	if !report(monitorStatus{Pid: pid}) {
		// The caller is gone before learning of the container: nobody
		// will ever start it, so do not leave it behind.
		_ = c.Signal(unix.SIGKILL)
		_, _ = p.Wait()
		_ = c.Destroy()
		return 1
	}
	return monitorInit(dir, c, p, tee)
}

// parseMonitorArgs reads the monitor's arguments: container dir,
// libcontainer root, ID, the log's limits and the CRI log's path (empty
// for none).
func parseMonitorArgs(args []string) (dir, runcRoot, id string, out outputSpec, err error) {
	if len(args) != 6 {
		return "", "", "", out, errors.New("bad arguments")
	}
	maxSize, err1 := strconv.ParseInt(args[3], 10, 64)
	maxFiles, err2 := strconv.Atoi(args[4])
	if err1 != nil || err2 != nil {
		return "", "", "", out, errors.New("bad log limits")
	}
	out = outputSpec{limits: logfile.Limits{MaxSize: maxSize, MaxFiles: maxFiles}, criLog: args[5]}
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
	tee.Finish(outputIdle)
	if err != nil {
		fmt.Fprintln(os.Stderr, "berth monitor:", err)
		return 1
	}
	return 0
}

// outputIdle is how long the copy of a stopped container's output may make
// no progress before it is cut (see logfile.Tee.Finish).
const outputIdle = 2 * time.Second

// initOutput are the write ends of the pipes the init writes into.
type initOutput struct {
	Stdout, Stderr *os.File
}

func (o initOutput) close() {
	o.Stdout.Close()
	if o.Stderr != o.Stdout {
		o.Stderr.Close()
	}
}

// outputSpec is where a container's output goes besides the caller's
// writers.
type outputSpec struct {
	// limits cap the kept log.
	limits logfile.Limits
	// criLog, when set, is the CRI log's path; report tells its write
	// failures.
	criLog string
	report func(error)
}

// keepOutput makes the pipes the init writes its output into and starts
// copying them into the container's capped log, into its CRI log when it
// has one, and to stdout and stderr (the caller's streams; nil: the log
// only). With one writer for both, one pipe keeps the order of the writes;
// but a CRI log tells the streams apart, so with one it takes a pipe each,
// and their writes to the one writer take turns.
func keepOutput(dir string, spec outputSpec, stdout, stderr io.Writer, same bool) (initOutput, *logfile.Tee, error) {
	log, err := logfile.Create(filepath.Join(dir, logFile), spec.limits)
	if err != nil {
		return initOutput{}, nil, err
	}
	var cri *crilog.Writer
	var stopServing func()
	if spec.criLog != "" {
		if cri, err = crilog.Open(spec.criLog, spec.report); err != nil {
			log.Close()
			return initOutput{}, nil, err
		}
		if stopServing, err = serveCRILog(dir, cri); err != nil {
			cri.Close()
			log.Close()
			return initOutput{}, nil, err
		}
		if same {
			same = false
			var mu sync.Mutex
			stdout, stderr = lockedWriter(&mu, stdout), lockedWriter(&mu, stderr)
		}
	}
	closeLogs := func() {
		if cri != nil {
			stopServing()
			cri.Close()
		}
		log.Close()
	}
	tee := logfile.NewTee(log)
	var out initOutput
	outR, outW, err := os.Pipe()
	if err != nil {
		closeLogs()
		return initOutput{}, nil, err
	}
	out.Stdout, out.Stderr = outW, outW
	var errR *os.File
	if !same {
		if errR, out.Stderr, err = os.Pipe(); err != nil {
			outR.Close()
			outW.Close()
			closeLogs()
			return initOutput{}, nil, err
		}
	}
	if cri != nil {
		tee.CopyAlso(outR, stdout, cri.Stream(crilog.Stdout))
		tee.CopyAlso(errR, stderr, cri.Stream(crilog.Stderr))
	} else {
		tee.Copy(outR, stdout)
		if errR != nil {
			tee.Copy(errR, stderr)
		}
	}
	tee.OnFinish(closeLogs)
	return out, tee, nil
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

// sameFile reports whether two descriptors are one file (the caller gave
// one writer for both streams, or neither).
func sameFile(a, b *os.File) bool {
	var sa, sb unix.Stat_t
	if unix.Fstat(int(a.Fd()), &sa) != nil || unix.Fstat(int(b.Fd()), &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
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
	out, tee, err := keepOutput(dir, spec, stdout, stderr, pio.Stdout == pio.Stderr)
	if err != nil {
		closeAll(dups)
		unlock()
		return err
	}
	tee.OnFinish(func() { closeAll(dups) })
	c, p, err := startInit(r.runcRoot(), id, cfg, proc, driver.IO{Stdin: pio.Stdin, Stdout: out.Stdout, Stderr: out.Stderr})
	out.close()
	if err != nil {
		tee.Finish(0)
		unlock()
		return classify(err)
	}
	exited := make(chan struct{})
	r.mu.Lock()
	r.exited[id] = exited
	r.mu.Unlock()
	go func() {
		defer close(exited)
		defer unlock()
		if err := recordExit(dir, c, p); err != nil {
			fmt.Fprintf(os.Stderr, "berth: container %s: %v\n", id, err)
		}
		tee.Finish(outputIdle)
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

// startInit creates the container in libcontainer and its init, which then
// waits on the exec fifo for Start.
func startInit(runcRoot, id string, cfg *configs.Config, proc *specs.Process, pio driver.IO) (*lc.Container, *lc.Process, error) {
	c, err := lc.Create(runcRoot, id, cfg)
	if err != nil {
		return nil, nil, err
	}
	p := nativeProcess(proc, true)
	p.Stdin, p.Stdout, p.Stderr = pio.Stdin, pio.Stdout, pio.Stderr
	if err := c.Start(p); err != nil {
		_ = c.Destroy()
		return nil, nil, err
	}
	return c, p, nil
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
