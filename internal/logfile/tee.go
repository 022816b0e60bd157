package logfile

import (
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Tee copies a container's output pipes into its log and into the
// caller's writers. A writer that fails (its reader is gone) ends the copy
// of its pipe, so that the container sees the broken pipe as if it wrote
// to the writer itself. A log that fails (a full disk) is skipped for that
// write: the container is never blocked by its log. So is the CRI log a
// copy may write besides (CopyAlso).
type Tee struct {
	log     io.Writer
	wg      sync.WaitGroup
	readers []*os.File
	// last is when a copy last made progress (UnixNano); busy counts
	// copies blocked in a write to a caller's writer.
	last atomic.Int64
	busy atomic.Int32
	// onFinish run once the copies ended.
	onFinish []func()
}

// OnFinish has f run when Finish returns.
func (t *Tee) OnFinish(f func()) { t.onFinish = append(t.onFinish, f) }

// NewTee returns a Tee writing into log.
func NewTee(log io.Writer) *Tee {
	t := &Tee{log: log}
	t.last.Store(time.Now().UnixNano())
	return t
}

// Copy starts copying r (the read end of a pipe, which the Tee closes) into
// the log and w (nil: the log only).
func (t *Tee) Copy(r *os.File, w io.Writer) { t.CopyAlso(r, w) }

// CopyAlso is Copy that also writes what it reads to each of also (nil
// ones are skipped), after the log and before w: writers whose failures are
// ignored, as the log's are (the container's CRI log stream, a Fanout's
// stream), each closed once the pipe ended. They must not block.
func (t *Tee) CopyAlso(r *os.File, w io.Writer, also ...io.WriteCloser) {
	var side []io.WriteCloser
	for _, a := range also {
		if a != nil {
			side = append(side, a)
		}
	}
	t.readers = append(t.readers, r)
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		defer r.Close()
		for _, a := range side {
			defer a.Close()
		}
		for {
			bp, n, err := readPooled(r)
			buf := *bp
			if n > 0 {
				t.last.Store(time.Now().UnixNano())
				_, _ = t.log.Write(buf[:n])
				for _, a := range side {
					_, _ = a.Write(buf[:n])
				}
				if w != nil {
					t.busy.Add(1)
					_, werr := w.Write(buf[:n])
					t.busy.Add(-1)
					if werr != nil {
						copyBufs.Put(bp)
						return
					}
				}
				t.last.Store(time.Now().UnixNano())
			}
			copyBufs.Put(bp)
			if err != nil {
				return
			}
		}
	}()
}

// copyBufs are the copies' buffers, taken only while data is read and
// written: a container whose output is idle (most are, most of the time)
// holds none, which matters to a supervisor copying thousands.
var copyBufs = sync.Pool{New: func() any {
	b := make([]byte, 32<<10)
	return &b
}}

// readPooled waits until r has data (or its end), then reads it into a
// buffer of copyBufs, which the caller puts back. Waiting, it holds no
// buffer: a pipe is waited for on the runtime's poller. A file the poller
// cannot wait for is read as it is.
func readPooled(r *os.File) (*[]byte, int, error) {
	rc, err := r.SyscallConn()
	if err != nil {
		bp := copyBufs.Get().(*[]byte)
		n, err := r.Read(*bp)
		return bp, n, err
	}
	var bp *[]byte
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		bp = copyBufs.Get().(*[]byte)
		for {
			n, rerr = syscall.Read(int(fd), *bp)
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN {
			copyBufs.Put(bp)
			bp = nil
			return false // wait until readable
		}
		return true
	})
	if bp == nil {
		bp = copyBufs.Get().(*[]byte)
	}
	if err != nil {
		return bp, 0, err
	}
	if rerr != nil {
		return bp, 0, &os.PathError{Op: "read", Path: r.Name(), Err: rerr}
	}
	if n <= 0 {
		return bp, 0, io.EOF
	}
	return bp, n, nil
}

// Finish returns once every pipe reached its end, which it does when the
// container's processes are gone. A process that outlives the one waited
// for (a child of an exec'd process, a process of a container sharing the
// host's PID namespace) may hold a pipe open: Finish closes the pipes and
// returns once the copies have been idle for idle, or, whatever their
// progress, once most has passed (most <= 0: no such bound), so that a
// process writing on never holds it up. A write to a caller's writer
// under way is waited for.
func (t *Tee) Finish(idle, most time.Duration) {
	defer func() {
		for _, f := range t.onFinish {
			f()
		}
	}()
	done := make(chan struct{})
	go func() {
		t.wg.Wait()
		close(done)
	}()
	if idle <= 0 {
		t.cut()
		<-done
		return
	}
	var deadline <-chan time.Time
	if most > 0 {
		timer := time.NewTimer(most)
		defer timer.Stop()
		deadline = timer.C
	}
	tick := time.NewTicker(idle / 4)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-deadline:
			t.cut()
			<-done
			return
		case <-tick.C:
			if t.busy.Load() == 0 && time.Since(time.Unix(0, t.last.Load())) > idle {
				t.cut()
				<-done
				return
			}
		}
	}
}

// cut ends the copies: a Read blocked on a pipe returns (pipes are
// pollable), and a Read after it fails.
func (t *Tee) cut() {
	for _, r := range t.readers {
		r.Close()
	}
}
