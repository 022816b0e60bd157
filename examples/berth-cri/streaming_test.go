package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	goruntime "runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/streaming/pkg/httpstream"
	"k8s.io/streaming/pkg/httpstream/spdy"

	"github.com/berthrun/berth/internal/fixture"
)

// spdyDial opens a connection to a streaming URL as kubectl and crictl
// do: an upgrade to SPDY, with protocol.
func spdyDial(t *testing.T, rawURL, protocol string) httpstream.Connection {
	t.Helper()
	rt, err := spdy.NewRoundTripperWithConfig(spdy.RoundTripperConfig{Proxier: func(*http.Request) (*url.URL, error) { return nil, nil }})
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, rawURL, nil)
	require.NoError(t, err)
	req.Header.Set(httpstream.HeaderProtocolVersion, protocol)
	resp, err := rt.RoundTrip(req)
	require.NoError(t, err)
	conn, err := rt.NewConnection(resp)
	require.NoError(t, err)
	return conn
}

// execSession is an exec's streams, client side (protocol v4).
type execSession struct {
	conn                  httpstream.Connection
	stdin, resize         httpstream.Stream
	stdout, stderr, errst *bytes.Buffer
	mu                    sync.Mutex
	done                  chan struct{}
}

// streams are those an exec or an attachment asks for.
type streams struct{ stdin, stdout, stderr, tty bool }

// startExec opens the streams an exec URL asks for (with a terminal, the
// stream of its sizes too) and copies what comes on them.
func startExec(t *testing.T, rawURL string, want streams) *execSession {
	t.Helper()
	conn := spdyDial(t, rawURL, remotecommand.StreamProtocolV4Name)
	e := &execSession{conn: conn, stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, errst: &bytes.Buffer{}, done: make(chan struct{})}
	create := func(typ string) httpstream.Stream {
		h := http.Header{}
		h.Set(remotecommand.StreamType, typ)
		s, err := conn.CreateStream(h)
		require.NoError(t, err)
		return s
	}
	errStream := create(remotecommand.StreamTypeError)
	var wg sync.WaitGroup
	copyTo := func(buf *bytes.Buffer, s httpstream.Stream) {
		wg.Go(func() {
			b := make([]byte, 4096)
			for {
				n, err := s.Read(b)
				e.mu.Lock()
				buf.Write(b[:n])
				e.mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	copyTo(e.errst, errStream)
	if want.stdin {
		e.stdin = create(remotecommand.StreamTypeStdin)
	}
	if want.stdout {
		copyTo(e.stdout, create(remotecommand.StreamTypeStdout))
	}
	if want.stderr {
		copyTo(e.stderr, create(remotecommand.StreamTypeStderr))
	}
	if want.tty {
		e.resize = create(remotecommand.StreamTypeResize)
	}
	go func() { wg.Wait(); close(e.done) }()
	return e
}

func (e *execSession) out() (string, string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stdout.String(), e.stderr.String()
}

// wait returns the exec's status, once the server ended it.
func (e *execSession) wait(t *testing.T) execStatus {
	t.Helper()
	select {
	case <-e.done:
	case <-time.After(time.Minute):
		t.Fatal("the exec's streams did not end")
	}
	e.conn.Close()
	var st execStatus
	e.mu.Lock()
	defer e.mu.Unlock()
	require.NoError(t, json.Unmarshal(e.errst.Bytes(), &st), "status %q", e.errst.String())
	return st
}

// execStatus is the status the server writes on the error stream.
type execStatus struct {
	Status  string
	Message string
	Reason  string
	Details struct {
		Causes []struct{ Reason, Message string }
	}
}

func (st execStatus) exitCode() string {
	if st.Status == "Success" {
		return "0"
	}
	for _, c := range st.Details.Causes {
		if c.Reason == remotecommand.ExitCodeCauseType {
			return c.Message
		}
	}
	return "no exit code: " + st.Message
}

// forwardStreams opens the stream pair of one forwarded connection to
// port (request id distinguishes them on a connection).
func forwardStreams(t *testing.T, conn httpstream.Connection, port, id int) (data, errs httpstream.Stream) {
	t.Helper()
	h := http.Header{}
	h.Set(portforward.StreamType, portforward.StreamTypeError)
	h.Set(portforward.PortHeader, fmt.Sprint(port))
	h.Set(portforward.PortForwardRequestIDHeader, fmt.Sprint(id))
	errs, err := conn.CreateStream(h)
	require.NoError(t, err)
	// Nothing is sent on the error stream, as kubectl does.
	require.NoError(t, errs.Close())
	h.Set(portforward.StreamType, portforward.StreamTypeData)
	data, err = conn.CreateStream(h)
	require.NoError(t, err)
	return data, errs
}

// readUntil reads r until what was read contains want.
func readUntil(t *testing.T, r io.Reader, want string) string {
	t.Helper()
	var got []byte
	b := make([]byte, 1024)
	for !strings.Contains(string(got), want) {
		n, err := r.Read(b)
		got = append(got, b[:n]...)
		require.NoError(t, err, "read %q so far, waiting for %q", got, want)
	}
	return string(got)
}

// procsWith lists the host's processes whose command line contains arg
// (a container's processes are the host's too).
func procsWith(arg string) []string {
	var out []string
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		b, err := os.ReadFile("/proc/" + d.Name() + "/cmdline")
		if err == nil && strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), arg) {
			out = append(out, d.Name()+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}

func countFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(fds)
}

// streamingPod runs a pod with a container that serves an echo on port
// 8080 and on port 8082 an echo that holds its connection open after the
// client's end (as a hostile server would), and returns their IDs.
func streamingPod(t *testing.T, s *server, name string, cmd ...string) (pod, ctr string) {
	t.Helper()
	pod, pcfg := runPod(t, s, name)
	if len(cmd) == 0 {
		cmd = []string{"sh", "-c", "nc -ll -p 8082 -e sh -c 'cat; exec sleep 1000' & exec nc -ll -p 8080 -e cat"}
	}
	return pod, startContainer(t, s, pod, pcfg, containerConfig("main", cmd...))
}

// Exec through the streaming server: the RPC's checks, the streams, the
// exit code; a client that goes away takes its process with it.
func TestStreamingExec(t *testing.T) {
	fixture.RequireRoot(t)
	ctx := context.Background()
	root := fixture.TempDir(t)
	busyboxImage(t, root)
	s := startServer(t, root)
	pod, cid := streamingPod(t, s, "exec")

	// What the RPC refuses, before any stream.
	for _, c := range []struct {
		name string
		req  *cri.ExecRequest
		code codes.Code
	}{
		{"unknown container", &cri.ExecRequest{ContainerId: "nosuch", Cmd: []string{"true"}, Stdout: true}, codes.NotFound},
		{"no stream", &cri.ExecRequest{ContainerId: cid, Cmd: []string{"true"}}, codes.InvalidArgument},
		{"tty and stderr", &cri.ExecRequest{ContainerId: cid, Cmd: []string{"true"}, Stdout: true, Stderr: true, Tty: true}, codes.InvalidArgument},
		{"no command", &cri.ExecRequest{ContainerId: cid, Stdout: true}, codes.InvalidArgument},
	} {
		_, err := s.rt.Exec(ctx, c.req)
		requireCode(t, c.code, err)
	}

	// Output on both streams, and the exit code.
	resp, err := s.rt.Exec(ctx, &cri.ExecRequest{ContainerId: cid, Cmd: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}, Stdout: true, Stderr: true})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(resp.Url, "http://127.0.0.1:"), "URL %q", resp.Url)
	e := startExec(t, resp.Url, streams{stdout: true, stderr: true})
	st := e.wait(t)
	require.Equal(t, "3", st.exitCode())
	o, er := e.out()
	require.Equal(t, "out\n", o)
	require.Equal(t, "err\n", er)
	// A URL serves once.
	rawResp, err := http.Post(resp.Url, "", nil)
	require.NoError(t, err)
	rawResp.Body.Close()
	require.Equal(t, http.StatusNotFound, rawResp.StatusCode)

	// Standard input, to its end.
	resp, err = s.rt.Exec(ctx, &cri.ExecRequest{ContainerId: cid, Cmd: []string{"sh", "-c", "cat; echo done"}, Stdin: true, Stdout: true})
	require.NoError(t, err)
	e = startExec(t, resp.Url, streams{stdin: true, stdout: true})
	_, err = e.stdin.Write([]byte("typed\n"))
	require.NoError(t, err)
	require.NoError(t, e.stdin.Close())
	st = e.wait(t)
	require.Equal(t, "0", st.exitCode(), "%+v", st)
	o, _ = e.out()
	require.Equal(t, "typed\ndone\n", o)

	// A client that goes away mid-stream: its process is killed, and
	// nothing of the stream is left in the server.
	warm := func() {
		resp, err := s.rt.Exec(ctx, &cri.ExecRequest{ContainerId: cid, Cmd: []string{"true"}, Stdout: true})
		require.NoError(t, err)
		startExec(t, resp.Url, streams{stdout: true}).wait(t)
	}
	warm()
	goroutines, fds := settle(t)
	for _, c := range []struct {
		name, cmd, gone string
		tty             bool
	}{
		{"a command that runs on", "echo started; exec sleep 4240", "sleep 4240", false},
		{"the same on a terminal", "echo started; exec sleep 4241", "sleep 4241", true},
		// What the command leaves running in the container holds its
		// output open: it stays (the tenant's), the stream does not.
		{"a command whose child holds its output", "sleep 4242 & echo started; exec sleep 4243", "sleep 4243", false},
		{"the same on a terminal", "sleep 4244 & echo started; exec sleep 4245", "sleep 4245", true},
		{"a command that has exited, its child holding its output", "sleep 4246 & echo started", "", false},
	} {
		resp, err = s.rt.Exec(ctx, &cri.ExecRequest{ContainerId: cid, Cmd: []string{"sh", "-c", c.cmd}, Stdin: true, Stdout: true, Stderr: !c.tty, Tty: c.tty})
		require.NoError(t, err)
		e = startExec(t, resp.Url, streams{stdin: true, stdout: true, stderr: !c.tty, tty: c.tty})
		require.Eventually(t, func() bool { o, _ := e.out(); return strings.Contains(o, "started") }, time.Minute, 50*time.Millisecond, c.name)
		if c.gone != "" {
			require.NotEmpty(t, procsWith(c.gone), c.name)
		}
		require.NoError(t, e.conn.Close())
		if c.gone != "" {
			fixture.Eventually(t, func() bool { return len(procsWith(c.gone)) == 0 }, time.Minute, 50*time.Millisecond, func() string {
				return fmt.Sprintf("%s: the exec's process outlived its client: %v", c.name, procsWith(c.gone))
			})
		}
	}
	requireSettled(t, goroutines, fds)

	// Into a container that has stopped: failed-precondition.
	_, err = s.rt.StopContainer(ctx, &cri.StopContainerRequest{ContainerId: cid, Timeout: 1})
	require.NoError(t, err)
	_, err = s.rt.Exec(ctx, &cri.ExecRequest{ContainerId: cid, Cmd: []string{"true"}, Stdout: true})
	requireCode(t, codes.FailedPrecondition, err)
	_, err = s.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: pod})
	require.NoError(t, err)
	require.Empty(t, leftovers(t, root, pod, cid))
}

// settle waits for the server's goroutines and descriptors to stop
// changing, and returns their numbers.
func settle(t *testing.T) (goroutines, fds int) {
	t.Helper()
	goroutines, fds = goruntime.NumGoroutine(), countFDs(t)
	for range 20 {
		time.Sleep(100 * time.Millisecond)
		g, f := goruntime.NumGoroutine(), countFDs(t)
		if g == goroutines && f == fds {
			break
		}
		goroutines, fds = g, f
	}
	return goroutines, fds
}

// requireSettled waits for the goroutines and descriptors to come back
// to what settle saw.
func requireSettled(t *testing.T, goroutines, fds int) {
	t.Helper()
	var g, f int
	ok := false
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		g, f = goruntime.NumGoroutine(), countFDs(t)
		if g <= goroutines && f <= fds {
			ok = true
			break
		}
	}
	if !ok {
		buf := make([]byte, 1<<20)
		buf = buf[:goruntime.Stack(buf, true)]
		t.Fatalf("streams left %d goroutines (%d before) and %d descriptors (%d before); goroutines:\n%s", g, goroutines, f, fds, buf)
	}
	t.Logf("goroutines %d (before %d), descriptors %d (before %d)", g, goroutines, f, fds)
}

// Port forwarding into a pod's network namespace: connections reach the
// pod's loopback; a port nobody listens on fails its own connection, and
// the others go on; a client that goes away leaves nothing.
func TestStreamingPortForward(t *testing.T) {
	fixture.RequireRoot(t)
	ctx := context.Background()
	root := fixture.TempDir(t)
	busyboxImage(t, root)
	s := startServer(t, root)
	// Nothing listens on the host's port 8080: what answers there is
	// the pod's.
	pod, _ := streamingPod(t, s, "forward")

	for _, c := range []struct {
		name string
		req  *cri.PortForwardRequest
		code codes.Code
	}{
		{"unknown pod", &cri.PortForwardRequest{PodSandboxId: "nosuch"}, codes.NotFound},
		{"port 0", &cri.PortForwardRequest{PodSandboxId: pod, Port: []int32{0}}, codes.InvalidArgument},
		{"port past 65535", &cri.PortForwardRequest{PodSandboxId: pod, Port: []int32{65536}}, codes.InvalidArgument},
	} {
		_, err := s.rt.PortForward(ctx, c.req)
		requireCode(t, c.code, err)
	}

	forward := func() httpstream.Connection {
		resp, err := s.rt.PortForward(ctx, &cri.PortForwardRequest{PodSandboxId: pod})
		require.NoError(t, err)
		return spdyDial(t, resp.Url, portforward.ProtocolV1Name)
	}
	echo := func(conn httpstream.Connection, port, id int, msg string) {
		t.Helper()
		var data httpstream.Stream
		require.Eventually(t, func() bool {
			// The echo may not listen yet.
			d, errs := forwardStreams(t, conn, port, id)
			if _, err := d.Write([]byte(msg)); err != nil {
				return false
			}
			b := make([]byte, len(msg))
			if _, err := io.ReadFull(d, b); err != nil || string(b) != msg {
				msg, _ := io.ReadAll(errs)
				t.Logf("not yet: %s", msg)
				id += 1000
				return false
			}
			data = d
			return true
		}, time.Minute, 200*time.Millisecond)
		require.NoError(t, data.Close())
	}
	conn := forward()
	echo(conn, 8080, 1, "ping\n")

	// A port nobody listens on: an error on its own streams...
	data, errs := forwardStreams(t, conn, 8081, 2)
	msg, _ := io.ReadAll(errs)
	require.Contains(t, string(msg), "8081")
	require.Contains(t, string(msg), "connection refused")
	_, err := io.ReadAll(data)
	_ = err // reset: the forward is over
	// ...and the connection goes on.
	echo(conn, 8080, 3, "pong\n")
	require.NoError(t, conn.Close())

	// Clients that go away mid-stream, with the pod's end open: nothing
	// is left in the server.
	conn = forward()
	echo(conn, 8082, 1, "warm\n")
	require.NoError(t, conn.Close())
	goroutines, fds := settle(t)
	for i := range 3 {
		conn = forward()
		data, _ := forwardStreams(t, conn, 8082, 1)
		_, err := data.Write([]byte("half\n"))
		require.NoError(t, err)
		readUntil(t, data, "half\n")
		if i == 1 {
			// A client that stops sending, then goes: the pod holds
			// its end open all the while.
			require.NoError(t, data.Close())
		}
		require.NoError(t, conn.Close())
	}
	requireSettled(t, goroutines, fds)

	// A stopped pod forwards nothing.
	_, err = s.rt.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: pod})
	require.NoError(t, err)
	_, err = s.rt.PortForward(ctx, &cri.PortForwardRequest{PodSandboxId: pod})
	requireCode(t, codes.FailedPrecondition, err)
}

// Stopping berth-cri ends the streams: an exec's process is killed, a
// forwarded connection closed, and the stop does not wait for clients.
func TestStreamingShutdown(t *testing.T) {
	fixture.RequireRoot(t)
	ctx := context.Background()
	root := fixture.TempDir(t)
	busyboxImage(t, root)
	s := startServer(t, root)
	pod, cid := streamingPod(t, s, "shutdown")
	resp, err := s.rt.Exec(ctx, &cri.ExecRequest{ContainerId: cid, Cmd: []string{"sh", "-c", "echo started; exec sleep 4343"}, Stdin: true, Stdout: true})
	require.NoError(t, err)
	e := startExec(t, resp.Url, streams{stdin: true, stdout: true})
	require.Eventually(t, func() bool { o, _ := e.out(); return o == "started\n" }, time.Minute, 50*time.Millisecond)
	fresp, err := s.rt.PortForward(ctx, &cri.PortForwardRequest{PodSandboxId: pod})
	require.NoError(t, err)
	conn := spdyDial(t, fresp.Url, portforward.ProtocolV1Name)
	var data httpstream.Stream
	require.Eventually(t, func() bool {
		d, _ := forwardStreams(t, conn, 8080, 1)
		if _, err := d.Write([]byte("x\n")); err != nil {
			return false
		}
		b := make([]byte, 2)
		if _, err := io.ReadFull(d, b); err != nil {
			return false
		}
		data = d
		return true
	}, time.Minute, 200*time.Millisecond)

	s.stop()
	require.Empty(t, procsWith("sleep 4343"))
	select {
	case <-e.done:
	case <-time.After(time.Minute):
		t.Fatal("the exec's streams outlived the server")
	}
	_, err = io.ReadAll(data)
	_ = err // ended, reset or not
	conn.Close()

	// Removed by a server on the same root.
	s = startServer(t, root)
	_, err = s.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: pod})
	require.NoError(t, err)
	require.Empty(t, leftovers(t, root, pod, cid))
}

// Attaching to a container's shell, with and without a terminal: what
// is typed reaches it, a resize reaches its terminal, a client that goes
// away leaves the container running and nothing in the server, and with
// stdin_once the end of the client's input ends the shell.
func TestStreamingAttach(t *testing.T) {
	fixture.RequireRoot(t)
	ctx := context.Background()
	root := fixture.TempDir(t)
	busyboxImage(t, root)
	s := startServer(t, root)
	pcfg := podConfig("attach")
	run, err := s.rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: pcfg})
	require.NoError(t, err)
	pod := run.PodSandboxId
	t.Cleanup(func() { s.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: pod}) })
	shell := func(name string, tty, once bool) string {
		cfg := containerConfig(name, "sh")
		cfg.Stdin, cfg.StdinOnce, cfg.Tty = true, once, tty
		cr, err := s.rt.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: pcfg})
		require.NoError(t, err)
		_, err = s.rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: cr.ContainerId})
		require.NoError(t, err)
		return cr.ContainerId
	}
	state := func(id string) cri.ContainerState {
		st, err := s.rt.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: id})
		require.NoError(t, err)
		return st.Status.State
	}
	plain, term, once := shell("plain", false, false), shell("term", true, false), shell("once", false, true)

	for _, c := range []struct {
		name string
		req  *cri.AttachRequest
		code codes.Code
	}{
		{"unknown container", &cri.AttachRequest{ContainerId: "nosuch", Stdout: true}, codes.NotFound},
		{"no stream", &cri.AttachRequest{ContainerId: plain}, codes.InvalidArgument},
		{"tty and stderr", &cri.AttachRequest{ContainerId: term, Stdout: true, Stderr: true, Tty: true}, codes.InvalidArgument},
	} {
		_, err := s.rt.Attach(ctx, c.req)
		requireCode(t, c.code, err)
	}

	attach := func(id string, want streams) *execSession {
		t.Helper()
		resp, err := s.rt.Attach(ctx, &cri.AttachRequest{ContainerId: id, Stdin: want.stdin, Stdout: want.stdout, Stderr: want.stderr, Tty: want.tty})
		require.NoError(t, err)
		return startExec(t, resp.Url, want)
	}
	// typeUntil types line until the output shows want (the attachment
	// may not be joined yet when the first line is typed).
	typeUntil := func(e *execSession, line, want string) {
		t.Helper()
		fixture.Eventually(t, func() bool {
			_, err := e.stdin.Write([]byte(line))
			require.NoError(t, err)
			time.Sleep(100 * time.Millisecond)
			o, _ := e.out()
			return strings.Contains(o, want)
		}, time.Minute, 100*time.Millisecond, func() string {
			o, er := e.out()
			return fmt.Sprintf("waiting for %q; stdout %q, stderr %q", want, o, er)
		})
	}
	warm := attach(plain, streams{stdin: true, stdout: true, stderr: true})
	typeUntil(warm, "echo warm-$((1+1))\n", "warm-2")
	require.NoError(t, warm.conn.Close())
	goroutines, fds := settle(t)
	for range 2 {
		e := attach(plain, streams{stdin: true, stdout: true, stderr: true})
		typeUntil(e, "echo plain-$((3+4)); echo to-stderr >&2\n", "plain-7")
		require.Eventually(t, func() bool { _, er := e.out(); return er == "to-stderr\n" }, time.Minute, 50*time.Millisecond)
		require.NoError(t, e.conn.Close())
		require.Equal(t, cri.ContainerState_CONTAINER_RUNNING, state(plain))

		e = attach(term, streams{stdin: true, stdout: true, tty: true})
		_, err := e.resize.Write([]byte(`{"Width":91,"Height":31}`))
		require.NoError(t, err)
		typeUntil(e, "stty size\n", "31 91")
		require.NoError(t, e.conn.Close())
		require.Equal(t, cri.ContainerState_CONTAINER_RUNNING, state(term))
	}
	requireSettled(t, goroutines, fds)

	// stdin_once: the end of the first client's input is the shell's.
	e := attach(once, streams{stdin: true, stdout: true})
	typeUntil(e, "echo once-$((2*3))\n", "once-6")
	require.NoError(t, e.stdin.Close())
	require.Equal(t, "0", e.wait(t).exitCode())
	require.Eventually(t, func() bool { return state(once) == cri.ContainerState_CONTAINER_EXITED }, time.Minute, 50*time.Millisecond)
	_, err = s.rt.Attach(ctx, &cri.AttachRequest{ContainerId: once, Stdout: true})
	requireCode(t, codes.FailedPrecondition, err)

	_, err = s.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: pod})
	require.NoError(t, err)
	require.Empty(t, leftovers(t, root, pod, plain, term, once))
}
