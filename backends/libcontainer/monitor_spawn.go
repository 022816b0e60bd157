package libcontainer

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/runc/libcontainer/configs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/internal/errclass"
	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/runtime/driver"
)

// spawnMonitor starts the container's monitor, which creates the init in
// libcontainer and reports back. It returns the monitor's pid once the init
// exists (waiting on its exec fifo).
func (r *Runtime) spawnMonitor(ctx context.Context, id string, cfg *configs.Config, proc *specs.Process, pio driver.IO, out outputSpec) (int, error) {
	dir := r.dir(id)
	if err := writeMonitorJob(dir, cfg, proc); err != nil {
		return 0, err
	}
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

	cmd := exec.Command("/proc/self/exe", monitorArg, dir, r.runcRoot(), id,
		strconv.FormatInt(out.limits.MaxSize, 10), strconv.Itoa(out.limits.MaxFiles), out.criLog, out.flags())
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

	if err := readMonitorStatus(dir, statusR); err != nil {
		return 0, err
	}
	if copyWG != nil {
		r.mu.Lock()
		r.copies[id] = copyWG
		r.mu.Unlock()
	}
	return cmd.Process.Pid, nil
}

// writeMonitorJob writes what the monitor reads in the container's
// directory: the libcontainer config, the process, and the monitor's lock
// file.
func writeMonitorJob(dir string, cfg *configs.Config, proc *specs.Process) error {
	if err := fsutil.WriteJSON(filepath.Join(dir, configFile), cfg); err != nil {
		return err
	}
	if err := fsutil.WriteJSON(filepath.Join(dir, processFile), proc); err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	lock.Close()
	return nil
}

// readMonitorStatus reads the monitor's report on the init from the status
// pipe: nil once the init exists, else why it does not (the monitor's log
// when it failed before reporting).
func readMonitorStatus(dir string, statusR io.Reader) error {
	b, err := io.ReadAll(io.LimitReader(statusR, 1<<20))
	if err != nil {
		return fmt.Errorf("monitor status: %w", err)
	}
	var st monitorStatus
	if err := json.Unmarshal(b, &st); err != nil || (st.Pid == 0 && st.Error == "") {
		tail, _ := os.ReadFile(filepath.Join(dir, monLogFile))
		return fmt.Errorf("monitor failed before reporting: %s: %w", strings.TrimSpace(string(tail)), errdefs.ErrUnknown)
	}
	if st.Error != "" {
		return fmt.Errorf("%s: %w", st.Error, errclass.FromName(st.Class))
	}
	return nil
}

// containerStdio turns the caller's IO into three files for the monitor:
// files are passed as they are, other readers and writers through pipes that
// this process copies, and missing streams are /dev/null. The monitor keeps
// the output in the container's log besides.
func (r *Runtime) containerStdio(dir string, pio driver.IO) (files [3]*os.File, wg *sync.WaitGroup, closeAfter []*os.File, err error) {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return files, nil, nil, err
	}
	closeAfter = append(closeAfter, null)
	files = [3]*os.File{null, null, null}
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
