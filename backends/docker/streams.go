package docker

import (
	"context"
	"io"
	"strconv"
	"sync"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/berthrun/berth/runtime/driver"
)

// attachment copies a process's standard streams between the caller's
// reader and writers and a hijacked Engine API connection, on which Docker
// multiplexes stdout and stderr (no terminal).
type attachment struct {
	resp client.HijackedResponse
	// done is closed once the output has been copied to the end and the
	// connection closed.
	done chan struct{}
	once sync.Once
}

// copyStreams starts copying: output until the daemon ends the stream
// (the process and everything holding its stdout exited), input until the
// reader ends, after which the process's stdin is closed.
func copyStreams(resp client.HijackedResponse, pio driver.IO) *attachment {
	a := &attachment{resp: resp, done: make(chan struct{})}
	go func() {
		defer close(a.done)
		_, _ = stdcopy.StdCopy(orDiscard(pio.Stdout), orDiscard(pio.Stderr), resp.Reader)
		a.close()
	}()
	if pio.Stdin != nil {
		go func() {
			_, _ = io.Copy(resp.Conn, pio.Stdin)
			_ = resp.CloseWrite()
		}()
	}
	return a
}

// close ends the copy (idempotent). Output not yet copied is lost.
func (a *attachment) close() {
	a.once.Do(func() { a.resp.Close() })
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// attach connects pio to a created container's streams before it starts,
// so that no output is missed.
func (r *Runtime) attach(ctx context.Context, dockerID string, pio driver.IO) (*attachment, error) {
	res, err := r.eng.ContainerAttach(ctx, dockerID, client.ContainerAttachOptions{
		Stream: true, Stdin: pio.Stdin != nil, Stdout: pio.Stdout != nil, Stderr: pio.Stderr != nil,
	})
	if err != nil {
		return nil, err
	}
	return copyStreams(res.HijackedResponse, pio), nil
}

// logConfig caps a container's log as berth asks (driver.LogLimits): on
// the daemon's json-file and local drivers, which keep the log on the
// daemon's disk, through their max-size and max-file options. Other
// drivers send the output elsewhere (journald, syslog...) and have no such
// options: the daemon's configuration stands.
func logConfig(daemonDriver string, l driver.LogLimits) container.LogConfig {
	if daemonDriver != "json-file" && daemonDriver != "local" {
		return container.LogConfig{}
	}
	if l.MaxSize <= 0 {
		l.MaxSize = defaultLogMaxSize
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = defaultLogMaxFiles
	}
	return container.LogConfig{Type: daemonDriver, Config: map[string]string{
		"max-size": strconv.FormatInt(l.MaxSize, 10),
		"max-file": strconv.Itoa(l.MaxFiles),
	}}
}

// The caps of a request without any (the portable layer always sets them).
const (
	defaultLogMaxSize  = 10 << 20
	defaultLogMaxFiles = 2
)

// Logs implements driver.Logger. Docker keeps a container's output in its
// log driver whether or not writers were attached; this reads all of it
// back, stdout and stderr in the order they came.
func (r *Runtime) Logs(ctx context.Context, id string) (io.ReadCloser, error) {
	var body io.ReadCloser
	err := r.do(ctx, id, func(did string) error {
		rc, err := r.eng.ContainerLogs(ctx, did, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
		body = rc
		return err
	})
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		_, err := stdcopy.StdCopy(pw, pw, body)
		body.Close()
		pw.CloseWithError(err)
	}()
	return &logReader{PipeReader: pr, body: body}, nil
}

// FollowLogs implements driver.LogFollower with the daemon's own follow,
// which ends when the container stops.
func (r *Runtime) FollowLogs(ctx context.Context, id string, tail int, w io.Writer) error {
	opts := client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Follow: true, Tail: "all"}
	if tail >= 0 {
		opts.Tail = strconv.Itoa(tail)
	}
	var body io.ReadCloser
	err := r.do(ctx, id, func(did string) error {
		rc, err := r.eng.ContainerLogs(ctx, did, opts)
		body = rc
		return err
	})
	if err != nil {
		return err
	}
	defer body.Close()
	// One writer for both streams: StdCopy writes them in turn.
	_, err = stdcopy.StdCopy(w, w, body)
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// logReader closes the daemon's response along with the pipe.
type logReader struct {
	*io.PipeReader
	body io.Closer
}

func (l *logReader) Close() error {
	l.body.Close()
	return l.PipeReader.Close()
}
