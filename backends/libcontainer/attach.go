package libcontainer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/containerd/errdefs"

	"github.com/berthrun/berth/runtime/driver"
)

// Attach implements driver.Attacher: it joins the init's streams through
// the control socket of the process that copies them (control.go), from
// any process on the root. A container whose output nobody copies any more
// (it ended) has nothing to join: Attach returns at once.
//
// Attach returns nil once the output has ended and was copied to pio; ctx's
// error when ctx ends first (a detach: the connection closes and the
// process copying the output forgets the attachment); an error when one of
// pio's writers fails, or when the attachment was dropped for falling
// behind the output (aborted). A write to pio's writers may still be under
// way when ctx ends; none begins after Attach returned. A Read of pio.Stdin
// under way when Attach returns is left to return on its own (a Reader
// cannot be interrupted), and what it read is dropped.
func (r *Runtime) Attach(ctx context.Context, id string, pio driver.IO) error {
	rec, err := r.readRecord(id)
	if err != nil {
		return err
	}
	stdout, stderr := nilIfNil(pio.Stdout), nilIfNil(pio.Stderr)
	if pio.Stdin != nil && !rec.OpenStdin {
		return fmt.Errorf("attach: standard input is not kept open for attachments (created without OpenStdin): %w", errdefs.ErrFailedPrecondition)
	}
	conn, br, err := r.control(ctx, id, controlRequest{Op: opAttach, Stdin: pio.Stdin != nil, Stdout: stdout != nil, Stderr: stderr != nil})
	if errors.Is(err, errNotServed) {
		return nil
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	if pio.Stdin != nil {
		go sendInput(conn, pio.Stdin)
	}
	return receiveOutput(ctx, conn, br, stdout, stderr)
}

// sendInput sends r to the attachment's connection, then the end of the
// input, until the connection fails (Attach returned).
func sendInput(conn net.Conn, r io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if writeFrame(conn, frameStdin, buf[:n]) != nil {
				return
			}
		}
		if err != nil {
			_ = writeFrame(conn, frameStdinEnd, nil)
			return
		}
	}
}

// receiveOutput copies the output frames to stdout and stderr until the end
// frame, or ctx ends.
func receiveOutput(ctx context.Context, conn net.Conn, br *bufio.Reader, stdout, stderr io.Writer) error {
	var (
		mu               sync.Mutex
		stopped, writing bool
	)
	// write writes p to w unless Attach is returning.
	write := func(w io.Writer, p []byte) (bool, error) {
		mu.Lock()
		if stopped {
			mu.Unlock()
			return false, nil
		}
		writing = true
		mu.Unlock()
		_, err := w.Write(p)
		mu.Lock()
		writing = false
		s := stopped
		mu.Unlock()
		return !s, err
	}
	result := make(chan error, 1)
	go func() {
		result <- func() error {
			for {
				kind, p, err := readFrame(br)
				if err != nil {
					return fmt.Errorf("attach: %v: the attachment was dropped (it fell behind the output, or the process copying it went away): %w", err, errdefs.ErrAborted)
				}
				var w io.Writer
				switch kind {
				case frameEnd:
					return nil
				case frameStdout:
					w = stdout
				case frameStderr:
					w = stderr
				}
				if w == nil || len(p) == 0 {
					continue
				}
				more, err := write(w, p)
				if err != nil {
					return fmt.Errorf("attach: write the output: %w", err)
				}
				if !more {
					return nil
				}
			}
		}()
	}()
	select {
	case err := <-result:
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	case <-ctx.Done():
		mu.Lock()
		stopped = true
		busy := writing
		mu.Unlock()
		conn.Close()
		if !busy {
			<-result
		}
		return ctx.Err()
	}
}
