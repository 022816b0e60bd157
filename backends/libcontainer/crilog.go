package libcontainer

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/crilog"
	"github.com/berthrun/berth/internal/errclass"
)

// A container with a CRI log (driver.CreateRequest.CRILog) has it written
// by whatever copies its output: its monitor, or the calling process for
// an Attached runtime. That process listens on a socket in the container's
// directory, containers/<id>/crilog.sock (root's alone, as the directory
// is), while it copies the output, and serves each request there in turn:
// "reopen\n" has it reopen the CRI log's path, and it answers once the new
// file is open with a JSON line, {} or the error and its class. A socket
// nobody listens on (its process is gone) refuses the connection.

const (
	criLogSock    = "crilog.sock"
	criLogReopen  = "reopen"
	criLogTimeout = 10 * time.Second
)

// criLogReply answers a request on the socket.
type criLogReply struct {
	Error string `json:"error,omitempty"`
	Class string `json:"class,omitempty"`
}

// inDir names file in dir through a descriptor of dir, so that a socket's
// path never exceeds the 108 bytes of sun_path however deep the state root
// is; the returned function closes the descriptor.
func inDir(dir, file string) (string, func(), error) {
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return "/proc/self/fd/" + strconv.Itoa(dfd) + "/" + file, func() { unix.Close(dfd) }, nil
}

// serveCRILog answers the reopen requests for w on the socket in the
// container's directory dir until the returned function runs, which
// closes the socket and returns once no request is served any more.
func serveCRILog(dir string, w *crilog.Writer) (func(), error) {
	path, done, err := inDir(dir, criLogSock)
	if err != nil {
		return nil, err
	}
	defer done()
	_ = os.Remove(filepath.Join(dir, criLogSock))
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("CRI log socket: %w", err)
	}
	ul := l.(*net.UnixListener)
	// The socket file is left to Delete, which removes the directory:
	// a request after the copy ended is refused as for a dead process.
	ul.SetUnlinkOnClose(false)
	if err := os.Chmod(filepath.Join(dir, criLogSock), 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("CRI log socket: %w", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := l.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				time.Sleep(10 * time.Millisecond) // out of descriptors, say
				continue
			}
			serveCRILogConn(conn, w)
		}
	}()
	return func() {
		l.Close()
		wg.Wait()
	}, nil
}

// serveCRILogConn serves one request: a client that says nothing or reads
// nothing is dropped after criLogTimeout.
func serveCRILogConn(conn net.Conn, w *crilog.Writer) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(criLogTimeout))
	line, err := bufio.NewReader(io.LimitReader(conn, 64)).ReadString('\n')
	if err != nil {
		return
	}
	var reply criLogReply
	if line != criLogReopen+"\n" {
		reply = criLogReply{Error: fmt.Sprintf("unknown request %q", line), Class: errclass.Name(errdefs.ErrInvalidArgument)}
	} else if err := w.Reopen(); err != nil {
		reply = criLogReply{Error: err.Error(), Class: errclass.Name(errclass.Ensure(err))}
	}
	b, _ := json.Marshal(reply)
	_, _ = conn.Write(append(b, '\n'))
}

// ReopenCRILog implements driver.CRILogReopener: it asks the process that
// copies the container's output to reopen its CRI log, and returns once it
// has.
func (r *Runtime) ReopenCRILog(ctx context.Context, id string) error {
	rec, err := r.readRecord(id)
	if err != nil {
		return err
	}
	if rec.CRILog == "" {
		return fmt.Errorf("created without a CRI log: %w", errdefs.ErrFailedPrecondition)
	}
	path, done, err := inDir(r.dir(id), criLogSock)
	if err != nil {
		return classify(err)
	}
	defer done()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("CRI log %s: no process copies the container's output any more: %w", rec.CRILog, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return fmt.Errorf("CRI log %s: %w", rec.CRILog, classify(err))
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := conn.Write([]byte(criLogReopen + "\n")); err != nil {
		return criLogConnErr(ctx, rec.CRILog, err)
	}
	line, err := bufio.NewReader(io.LimitReader(conn, 1<<20)).ReadBytes('\n')
	if err != nil {
		return criLogConnErr(ctx, rec.CRILog, err)
	}
	var reply criLogReply
	if err := json.Unmarshal(line, &reply); err != nil {
		return fmt.Errorf("CRI log %s: reply %q: %w", rec.CRILog, line, errdefs.ErrUnknown)
	}
	if reply.Error != "" {
		return fmt.Errorf("%s: %w", reply.Error, errclass.FromName(reply.Class))
	}
	return nil
}

// criLogConnErr is the error of a reopen request that broke: ctx's when it
// ended, else the process went away while it was asked.
func criLogConnErr(ctx context.Context, path string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("CRI log %s: %v: the process copying the container's output went away: %w", path, err, errdefs.ErrFailedPrecondition)
}
