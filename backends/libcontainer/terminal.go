package libcontainer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/runc/libcontainer/utils"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// A process with a terminal (the init's Spec.Process.Terminal, an exec's
// ProcessSpec.Terminal) gets a pseudo-terminal that runc's init allocates
// inside the container, from the container's own devpts instance, and
// makes its standard streams and controlling terminal; the master comes
// back over a console socket (libcontainer's Process.ConsoleSocket) to the
// process that copies the output: the monitor, the Attached owner, or the
// caller of an exec. What the process writes is read from the master until
// the last descriptor of the terminal is closed (the read then fails with
// EIO: the end of the output, not an error); input is written into the
// master, and the line discipline does the rest (echo, ^C).

// consoleSocket returns the two ends of a console socket: ours, to receive
// the master on, and the one for libcontainer's Process.ConsoleSocket,
// which the caller closes once the process is started.
func consoleSocket() (ours, theirs *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("console socket: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "console-socket"), os.NewFile(uintptr(fds[1]), "console-socket-init"), nil
}

// recvMaster takes the terminal's master from the console socket once the
// process is started (runc's init sent it before it reported ready; with
// the other end closed, a socket with nothing in it fails at once). The
// master is non-blocking, so that closing it ends a read or a write under
// way.
func recvMaster(sock *os.File) (*os.File, error) {
	// runc's own receiver; deprecated, and due to go in runc 1.6: then
	// x/sys/unix's ParseUnixRights over a Recvmsg.
	f, err := utils.RecvFile(sock)
	if err != nil {
		return nil, fmt.Errorf("receive the terminal: %w", err)
	}
	defer f.Close()
	// Only a pseudo-terminal's master has a slave number.
	if _, err := unix.IoctlGetUint32(int(f.Fd()), unix.TIOCGPTN); err != nil {
		return nil, fmt.Errorf("receive the terminal: not a pseudo-terminal master: %w", err)
	}
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, fmt.Errorf("receive the terminal: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("receive the terminal: %w", err)
	}
	return os.NewFile(uintptr(fd), "pty-master"), nil
}

// masterReader returns a second descriptor of the master for the copy of
// the output, which closes it once the output ended: the master itself
// must stay open until the process exits, as closing the last descriptor
// of a master hangs its terminal up, and the process, whose output ended
// when it closed its terminal, would be killed by the SIGHUP.
func masterReader(master *os.File) (*os.File, error) {
	rc, err := master.SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd int
	var dupErr error
	if err := rc.Control(func(mfd uintptr) { fd, dupErr = unix.FcntlInt(mfd, unix.F_DUPFD_CLOEXEC, 3) }); err != nil {
		return nil, err
	}
	if dupErr != nil {
		return nil, fmt.Errorf("dup the terminal: %w", dupErr)
	}
	// Non-blocking as the master is (one open file): pollable.
	return os.NewFile(uintptr(fd), master.Name()), nil
}

// keepGoing is the writer of a terminal's output to the caller, w (nil:
// none), whose failure drops it instead of ending the copy: a terminal has
// no broken pipe to give its process, and a copy that stopped reading
// would leave the process blocked on a full terminal, and the logs and
// attachments without its output. One goroutine writes.
func keepGoing(w io.Writer) io.Writer {
	if w == nil {
		return nil
	}
	return &dropOnError{w: w}
}

type dropOnError struct {
	w      io.Writer
	failed bool
}

func (d *dropOnError) Write(p []byte) (int, error) {
	if !d.failed {
		if _, err := d.w.Write(p); err != nil {
			d.failed = true
		}
	}
	return len(p), nil
}

// setWinsize sets the size of the terminal whose master is f; a closed
// master (its output ended) is failed-precondition.
func setWinsize(f *os.File, height, width uint16) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("resize: %w", err)
	}
	var ioErr error
	err = rc.Control(func(fd uintptr) {
		ioErr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: height, Col: width})
	})
	if errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("resize: the terminal is closed: %w", errdefs.ErrFailedPrecondition)
	}
	if err == nil {
		err = ioErr
	}
	if err != nil {
		return fmt.Errorf("resize: %w", classify(err))
	}
	return nil
}

// boxSize checks a terminal size: a terminal's rows and columns fit 16 bits.
func boxSize(b specs.Box) (height, width uint16, err error) {
	if b.Height > 0xffff || b.Width > 0xffff {
		return 0, 0, fmt.Errorf("terminal size %dx%d: at most 65535 rows and columns: %w", b.Height, b.Width, errdefs.ErrInvalidArgument)
	}
	return uint16(b.Height), uint16(b.Width), nil
}

// ResizeTerminal implements driver.Attacher: the process that copies the
// init's output holds its terminal and sets its size.
func (r *Runtime) ResizeTerminal(ctx context.Context, id string, size specs.Box) error {
	rec, err := r.readRecord(id)
	if err != nil {
		return err
	}
	if rec.Spec == nil || rec.Spec.Process == nil || !rec.Spec.Process.Terminal {
		return fmt.Errorf("resize: the init has no terminal: %w", errdefs.ErrFailedPrecondition)
	}
	h, w, err := boxSize(size)
	if err != nil {
		return err
	}
	err = r.request(ctx, id, controlRequest{Op: opResize, Height: h, Width: w})
	if errors.Is(err, errNotServed) {
		return fmt.Errorf("resize: the terminal is closed: %w", errdefs.ErrFailedPrecondition)
	}
	return err
}
