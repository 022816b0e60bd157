package libcontainer

import (
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/opencontainers/runc/libcontainer/configs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/runtime/driver"
)

// writeMonitorJob writes what the monitor reads in the container's
// directory: the libcontainer config, the process, and the monitor's lock
// file.
func writeMonitorJob(dir string, cfg *configs.Config, proc *specs.Process) error {
	// Read at once by the supervisor, never after a crash: not synced.
	if err := fsutil.WriteJSONVolatile(filepath.Join(dir, configFile), cfg); err != nil {
		return err
	}
	if err := fsutil.WriteJSONVolatile(filepath.Join(dir, processFile), proc); err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	lock.Close()
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
