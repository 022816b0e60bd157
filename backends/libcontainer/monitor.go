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
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	lc "github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fsutil"
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

// spawnMonitor starts the container's monitor, which creates the init in
// libcontainer and reports back. It returns the monitor's pid once the init
// exists (waiting on its exec fifo).
func (r *Runtime) spawnMonitor(ctx context.Context, id string, cfg *configs.Config, proc *specs.Process, pio driver.IO) (int, error) {
	dir := r.dir(id)
	if err := fsutil.WriteJSON(filepath.Join(dir, configFile), cfg); err != nil {
		return 0, err
	}
	if err := fsutil.WriteJSON(filepath.Join(dir, processFile), proc); err != nil {
		return 0, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return 0, err
	}
	lock.Close()
	monLog, err := os.OpenFile(filepath.Join(dir, monLogFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer monLog.Close()

	stdio, copyWG, closeAfter, err := r.containerStdio(dir, pio)
	defer func() {
		for _, f := range closeAfter {
			f.Close()
		}
	}()
	if err != nil {
		return 0, err
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer statusR.Close()

	cmd := exec.Command("/proc/self/exe", monitorArg, dir, r.runcRoot(), id)
	cmd.Args[0] = os.Args[0]
	cmd.Stdin = nil
	cmd.Stdout = monLog
	cmd.Stderr = monLog
	cmd.ExtraFiles = []*os.File{statusW, stdio[0], stdio[1], stdio[2]}
	// Its own session: the caller's terminal signals and exit do not reach
	// the monitor or the container.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	statusW.Close()
	if err != nil {
		return 0, fmt.Errorf("start monitor: %w", err)
	}
	// Reap the monitor whenever it ends, so it does not linger as a zombie
	// of a long-lived caller.
	go func() { _ = cmd.Wait() }()

	b, err := io.ReadAll(io.LimitReader(statusR, 1<<20))
	if err != nil {
		return 0, fmt.Errorf("monitor status: %w", err)
	}
	var st monitorStatus
	if err := json.Unmarshal(b, &st); err != nil || (st.Pid == 0 && st.Error == "") {
		tail, _ := os.ReadFile(filepath.Join(dir, monLogFile))
		return 0, fmt.Errorf("monitor failed before reporting: %s: %w", strings.TrimSpace(string(tail)), errdefs.ErrUnknown)
	}
	if st.Error != "" {
		return 0, fmt.Errorf("%s: %w", st.Error, classFromName(st.Class))
	}
	if copyWG != nil {
		r.mu.Lock()
		r.copies[id] = copyWG
		r.mu.Unlock()
	}
	return cmd.Process.Pid, nil
}

// containerStdio turns the caller's IO into three files for the monitor:
// files are passed as they are, other readers and writers through pipes that
// this process copies, and missing output goes to the container's log.
func (r *Runtime) containerStdio(dir string, pio driver.IO) (files [3]*os.File, wg *sync.WaitGroup, closeAfter []*os.File, err error) {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return files, nil, nil, err
	}
	closeAfter = append(closeAfter, null)
	files = [3]*os.File{null, null, null}
	if pio.Stdout == nil && pio.Stderr == nil {
		log, err := os.OpenFile(filepath.Join(dir, logFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return files, nil, closeAfter, err
		}
		closeAfter = append(closeAfter, log)
		files[1], files[2] = log, log
	}
	wg = &sync.WaitGroup{}
	copying := false
	if pio.Stdin != nil {
		if f, ok := pio.Stdin.(*os.File); ok {
			files[0] = f
		} else {
			pr, pw, err := os.Pipe()
			if err != nil {
				return files, nil, closeAfter, err
			}
			closeAfter = append(closeAfter, pr)
			files[0] = pr
			go func() {
				_, _ = io.Copy(pw, pio.Stdin)
				pw.Close()
			}()
		}
	}
	for i, w := range []io.Writer{pio.Stdout, pio.Stderr} {
		if w == nil {
			continue
		}
		if i == 1 && w == pio.Stdout {
			// One writer for both: one pipe, so writes are never
			// concurrent and their order is kept (as os/exec does).
			files[2] = files[1]
			continue
		}
		if f, ok := w.(*os.File); ok {
			files[i+1] = f
			continue
		}
		pr, pw, err := os.Pipe()
		if err != nil {
			return files, nil, closeAfter, err
		}
		closeAfter = append(closeAfter, pw)
		files[i+1] = pw
		copying = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer pr.Close()
			_, _ = io.Copy(w, pr)
		}()
	}
	if !copying {
		wg = nil
	}
	return files, wg, closeAfter, nil
}

// classNames maps class names sent by the monitor back to errdefs.
var classNames = map[string]error{
	"invalid-argument":    errdefs.ErrInvalidArgument,
	"not-found":           errdefs.ErrNotFound,
	"already-exists":      errdefs.ErrAlreadyExists,
	"failed-precondition": errdefs.ErrFailedPrecondition,
	"not-implemented":     errdefs.ErrNotImplemented,
	"permission-denied":   errdefs.ErrPermissionDenied,
	"resource-exhausted":  errdefs.ErrResourceExhausted,
}

func classFromName(n string) error {
	if e, ok := classNames[n]; ok {
		return e
	}
	return errdefs.ErrUnknown
}

func className(err error) string {
	for n, e := range classNames {
		if errors.Is(err, e) {
			return n
		}
	}
	return "unknown"
}

// runMonitor is the monitor process: create the init, report, wait for it,
// record its exit. args: container dir, libcontainer root, ID.
func runMonitor(args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "berth monitor: bad arguments")
		return 2
	}
	dir, runcRoot, id := args[0], args[1], args[2]
	status := os.NewFile(fdStatus, "status")
	report := func(st monitorStatus) bool {
		b, _ := json.Marshal(st)
		_, err := status.Write(b)
		status.Close()
		return err == nil
	}
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "berth monitor:", err)
		report(monitorStatus{Error: err.Error(), Class: className(classify(err))})
		return 1
	}
	// The lock stays held until this process exits: that is how others
	// know the monitor lives.
	lock, err := lockMonitor(dir)
	if err != nil {
		return fail(err)
	}
	// Closed (unlocked) on return, after the exit is recorded; the defer
	// also keeps the file from being finalized, and unlocked, earlier.
	defer lock.Close()
	var cfg configs.Config
	if err := fsutil.ReadJSON(filepath.Join(dir, configFile), &cfg); err != nil {
		return fail(err)
	}
	var proc specs.Process
	if err := fsutil.ReadJSON(filepath.Join(dir, processFile), &proc); err != nil {
		return fail(err)
	}
	stdin, stdout, stderr := os.NewFile(fdStdin, "stdin"), os.NewFile(fdStdout, "stdout"), os.NewFile(fdStderr, "stderr")
	c, p, err := startInit(runcRoot, id, &cfg, &proc, driver.IO{Stdin: stdin, Stdout: stdout, Stderr: stderr})
	if err != nil {
		return fail(err)
	}
	// The init holds its own copies; ours would keep the caller's pipes open.
	stdin.Close()
	stdout.Close()
	stderr.Close()
	pid, _ := p.Pid()
	if !report(monitorStatus{Pid: pid}) {
		// The caller is gone before learning of the container: nobody
		// will ever start it, so do not leave it behind.
		_ = c.Signal(unix.SIGKILL)
		_, _ = p.Wait()
		_ = c.Destroy()
		return 1
	}
	if err := recordExit(dir, p); err != nil {
		fmt.Fprintln(os.Stderr, "berth monitor:", err)
		return 1
	}
	return 0
}

// startAttached runs the monitor's job in this process: it becomes the
// init's parent and records its exit.
func (r *Runtime) startAttached(id string, cfg *configs.Config, proc *specs.Process, pio driver.IO) error {
	dir := r.dir(id)
	lockf, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	lockf.Close()
	lock, err := lockMonitor(dir)
	if err != nil {
		return err
	}
	if pio.Stdout == nil && pio.Stderr == nil {
		log, err := os.OpenFile(filepath.Join(dir, logFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			lock.Close()
			return err
		}
		defer log.Close()
		pio.Stdout, pio.Stderr = log, log
	}
	_, p, err := startInit(r.runcRoot(), id, cfg, proc, pio)
	if err != nil {
		lock.Close()
		return classify(err)
	}
	exited := make(chan struct{})
	r.mu.Lock()
	r.exited[id] = exited
	r.mu.Unlock()
	go func() {
		defer close(exited)
		defer lock.Close()
		if err := recordExit(dir, p); err != nil {
			fmt.Fprintf(os.Stderr, "berth: container %s: %v\n", id, err)
		}
	}()
	return nil
}

// lockMonitor takes the container's monitor lock for as long as the returned
// file stays open.
func lockMonitor(dir string) (*os.File, error) {
	lock, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		lock.Close()
		return nil, err
	}
	return lock, nil
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

// recordExit waits for the init and writes how it ended.
func recordExit(dir string, p *lc.Process) error {
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
	if err := fsutil.WriteJSON(filepath.Join(dir, exitFile), st); err != nil {
		return fmt.Errorf("record exit: %w", err)
	}
	return nil
}

// monitorAlive reports whether the container's monitor holds its lock.
func (r *Runtime) monitorAlive(id string) bool {
	f, err := os.Open(filepath.Join(r.dir(id), lockFile))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return errors.Is(err, unix.EWOULDBLOCK)
	}
	return false
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
