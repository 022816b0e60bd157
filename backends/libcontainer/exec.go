package libcontainer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	lc "github.com/opencontainers/runc/libcontainer"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/internal/logfile"
	"github.com/berthrun/berth/runtime/driver"
)

// Exec implements driver.Execer. The process is a child of the calling
// process; its output is copied by libcontainer into the given writers, or,
// with a terminal, by this process from the terminal's master.
func (r *Runtime) Exec(ctx context.Context, id string, ps *driver.ProcessSpec, pio driver.IO) (driver.Process, error) {
	if ps.ConsoleSize != nil {
		if _, _, err := boxSize(*ps.ConsoleSize); err != nil {
			return nil, err
		}
	}
	rec, err := r.readRecord(id)
	if err != nil {
		return nil, err
	}
	c, err := r.load(id)
	if err != nil {
		return nil, err
	}
	sp := *rec.Spec.Process
	sp.Args = ps.Args
	sp.Env = mergeEnv(sp.Env, ps.Env)
	if ps.Cwd != "" {
		sp.Cwd = ps.Cwd
	}
	if ps.User != nil {
		sp.User = *ps.User
	}
	sp.Terminal, sp.ConsoleSize = ps.Terminal, ps.ConsoleSize
	if ps.Terminal {
		return execTerminal(c, &sp, pio)
	}
	p := nativeProcess(&sp, false)
	p.Stdin = pio.Stdin
	stdin, closeStdin, err := stdinPipe(pio.Stdin)
	if err != nil {
		return nil, err
	}
	if stdin != nil {
		p.Stdin = stdin
	}
	out, err := outputPipes(p, nilIfNil(pio.Stdout), nilIfNil(pio.Stderr))
	if err != nil {
		closeStdin(true)
		return nil, err
	}
	err = c.Run(p)
	closeStdin(err != nil)
	tee := out.started(err == nil)
	if err != nil {
		return nil, classify(err)
	}
	proc := &process{p: p, tee: tee, done: make(chan struct{})}
	go proc.wait()
	return proc, nil
}

// outputs are the pipes an exec'd process writes its output into, which
// berth copies to the caller's writers (a logfile.Tee): given the writers
// themselves, libcontainer's exec.Cmd would copy them and its Wait would
// wait for the copies, which a child the process left behind holding the
// pipes (a daemon, "cmd &") holds up until it exits. The Tee's Finish
// cuts them instead. A writer that is a file is the process's own, with
// nothing to copy.
type outputs struct {
	// ours are the pipes' read ends and the writers they go to; theirs
	// the write ends, closed once the process has them.
	ours   []*os.File
	to     []io.Writer
	theirs []*os.File
}

// outputPipes sets the process's stdout and stderr: pipes of berth's for
// stdout and stderr that are not files, one for both when they are the
// same writer (as exec.Cmd does: writes to it never run at once).
func outputPipes(p *lc.Process, stdout, stderr io.Writer) (*outputs, error) {
	o := &outputs{}
	pipe := func(w io.Writer) (io.Writer, error) {
		if _, ok := w.(*os.File); ok || w == nil {
			return w, nil
		}
		r, pw, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		o.ours, o.to, o.theirs = append(o.ours, r), append(o.to, w), append(o.theirs, pw)
		return pw, nil
	}
	var err error
	if p.Stdout, err = pipe(stdout); err != nil {
		return nil, err
	}
	if sameWriter(stdout, stderr) {
		p.Stderr = p.Stdout
		return o, nil
	}
	if p.Stderr, err = pipe(stderr); err != nil {
		o.started(false)
		return nil, err
	}
	return o, nil
}

// started closes the write ends, which the process has now, and starts
// the copies when it ran (nil when there is nothing to copy); when it did
// not, the read ends go too.
func (o *outputs) started(ran bool) *logfile.Tee {
	closeAll(o.theirs)
	if !ran {
		closeAll(o.ours)
		return nil
	}
	if len(o.ours) == 0 {
		return nil
	}
	tee := logfile.NewTee(io.Discard)
	for i, r := range o.ours {
		tee.Copy(r, o.to[i])
	}
	return tee
}

// sameWriter reports whether a and b are the same writer, without the
// panic of comparing writers of a type that is not comparable.
func sameWriter(a, b io.Writer) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return a != nil && a == b
}

// stdinPipe hands the process the read end of a pipe of berth's, fed from
// r, when r is not a file: given r itself, libcontainer's exec.Cmd copies
// it and its Wait waits for that copy, so a process that exits without
// reading would be waited for until the caller's stdin ends. done closes
// the read end once the process has it, and the write end too when the
// start failed; the copy then ends at the first write after the process
// is gone.
func stdinPipe(r io.Reader) (*os.File, func(failed bool), error) {
	if _, ok := r.(*os.File); ok || r == nil {
		return nil, func(bool) {}, nil
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	var once sync.Once
	go func() {
		_, _ = io.Copy(pw, r)
		once.Do(func() { pw.Close() })
	}()
	return pr, func(failed bool) {
		pr.Close()
		if failed {
			once.Do(func() { pw.Close() })
		}
	}, nil
}

// mergeEnv overlays extra KEY=VALUE entries on base.
func mergeEnv(base, extra []string) []string {
	out := append([]string(nil), base...)
	for _, e := range extra {
		k, _, _ := strings.Cut(e, "=")
		replaced := false
		for i, b := range out {
			if bk, _, _ := strings.Cut(b, "="); bk == k {
				out[i], replaced = e, true
				break
			}
		}
		if !replaced {
			out = append(out, e)
		}
	}
	return out
}

// execTerminal runs the process with a terminal whose master this process
// holds: it copies the output to pio.Stdout and types pio.Stdin into it.
// The end of pio.Stdin closes nothing (a terminal has no end of input; the
// process reads what is typed, ^D included).
func execTerminal(c *lc.Container, sp *specs.Process, pio driver.IO) (driver.Process, error) {
	p := nativeProcess(sp, false)
	ours, theirs, err := consoleSocket()
	if err != nil {
		return nil, err
	}
	defer ours.Close()
	p.ConsoleSocket = theirs
	err = c.Run(p)
	theirs.Close()
	if err != nil {
		return nil, classify(err)
	}
	master, err := recvMaster(ours)
	var masterR *os.File
	if err == nil {
		if masterR, err = masterReader(master); err != nil {
			master.Close()
		}
	}
	if err != nil {
		_ = p.Signal(syscall.SIGKILL)
		_, _ = p.Wait()
		return nil, classify(err)
	}
	// The Tee's cut: a process left behind holding the terminal does not
	// hold up Wait for longer than outputIdle once the process exited.
	// Written through a duplicate when it is this process's stdout: a
	// broken pipe there would kill the caller with SIGPIPE.
	stdout, _, dups, err := noSigpipe(nilIfNil(pio.Stdout), nil)
	if err != nil {
		masterR.Close()
		master.Close()
		_ = p.Signal(syscall.SIGKILL)
		_, _ = p.Wait()
		return nil, err
	}
	tee := logfile.NewTee(io.Discard)
	tee.OnFinish(func() { closeAll(dups) })
	tee.Copy(masterR, keepGoing(stdout))
	if pio.Stdin != nil {
		go func() { _, _ = io.Copy(master, pio.Stdin) }()
	}
	proc := &process{p: p, master: master, tee: tee, done: make(chan struct{})}
	go proc.wait()
	return proc, nil
}

type process struct {
	p *lc.Process
	// master is the process's terminal; nil without one. tee copies its
	// output (nil when the caller's writers are files, or none).
	master *os.File
	tee    *logfile.Tee
	done   chan struct{}
	st     driver.ExitStatus
	err    error
}

func (p *process) wait() {
	defer close(p.done)
	ps, err := p.p.Wait()
	if p.tee != nil {
		p.tee.Finish(outputIdle, outputMost)
	}
	if p.master != nil {
		// Held open until now: closing it hangs the terminal up.
		p.master.Close()
	}
	p.st.ExitedAt = time.Now().UTC()
	var ee *exec.ExitError
	if ps == nil && errors.As(err, &ee) {
		ps = ee.ProcessState
	}
	if ps == nil {
		p.err = classify(err)
		return
	}
	p.st = exitStatusOf(ps.Sys().(syscall.WaitStatus))
}

func exitStatusOf(ws syscall.WaitStatus) driver.ExitStatus {
	st := driver.ExitStatus{ExitedAt: time.Now().UTC(), Code: -1}
	switch {
	case ws.Signaled():
		st.Signal = ws.Signal()
		st.Code = 128 + int(ws.Signal())
	case ws.Exited():
		st.Code = ws.ExitStatus()
	}
	return st
}

func (p *process) Pid() int {
	pid, _ := p.p.Pid()
	return pid
}

func (p *process) Wait(ctx context.Context) (driver.ExitStatus, error) {
	select {
	case <-p.done:
		return p.st, p.err
	case <-ctx.Done():
		return driver.ExitStatus{}, ctx.Err()
	}
}

func (p *process) Signal(ctx context.Context, sig syscall.Signal) error {
	select {
	case <-p.done:
		return fmt.Errorf("process already exited: %w", errdefs.ErrFailedPrecondition)
	default:
	}
	return classify(p.p.Signal(sig))
}

// Resize implements driver.Process.
func (p *process) Resize(ctx context.Context, size specs.Box) error {
	if p.master == nil {
		return fmt.Errorf("resize: the process has no terminal: %w", errdefs.ErrFailedPrecondition)
	}
	h, w, err := boxSize(size)
	if err != nil {
		return err
	}
	select {
	case <-p.done:
		return fmt.Errorf("resize: the process exited: %w", errdefs.ErrFailedPrecondition)
	default:
	}
	return setWinsize(p.master, h, w)
}
