package libcontainer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/runc/libcontainer/utils"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/errclass"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
)

// controlModes are the two processes that serve a control socket: the
// monitor, and the caller with Attached.
var controlModes = map[string][]Option{"monitor": nil, "attached": {Attached()}}

// testRuntime opens the engine (with opts) and a runtime over it on fresh
// state.
func testRuntime(t *testing.T, opts ...Option) (*runtime.Runtime, *Runtime) {
	t.Helper()
	root := filepath.Join(fixture.TempDir(t), "state")
	e, err := Open(root, opts...)
	require.NoError(t, err)
	rt, err := runtime.New(e, runtime.WithStateDir(root))
	require.NoError(t, err)
	t.Cleanup(func() { rt.Close() })
	return rt, e
}

// startTest creates and starts a container of cfg, deleted when the test
// ends.
func startTest(ctx context.Context, t *testing.T, rt *runtime.Runtime, id string, cfg *runtime.Config) *runtime.Container {
	t.Helper()
	c, err := rt.Create(ctx, id, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Delete(context.Background(), runtime.DeleteOptions{Force: true}) })
	require.NoError(t, c.Start(ctx))
	return c
}

func testSpec(t *testing.T, script string) *runtime.Config {
	return &runtime.Config{Spec: runtime.DefaultSpec(fixture.BusyboxTB(t), "/bin/sh", "-c", script)}
}

func (r *Runtime) sockPath(id string) string {
	return filepath.Join(r.dir(id), controlDir, controlSock)
}

// dialControl connects to the container's control socket as a client of
// any kind would.
func dialControl(t *testing.T, r *Runtime, id string) net.Conn {
	t.Helper()
	path, done, err := inDir(filepath.Join(r.dir(id), controlDir), controlSock)
	require.NoError(t, err)
	defer done()
	c, err := net.Dial("unix", path)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// readReply reads the answer to a request.
func readReply(t *testing.T, c net.Conn) error {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(time.Minute)))
	line, err := bufio.NewReader(c).ReadBytes('\n')
	require.NoError(t, err)
	var rep controlReply
	require.NoError(t, json.Unmarshal(line, &rep))
	if rep.Error == "" {
		return nil
	}
	return errors.Join(errors.New(rep.Error), errclass.FromName(rep.Class))
}

// Attaching to a container whose output has ended (its init closed its
// streams, or its terminal, and lives on) returns at once, the container
// still running.
func TestAttachAfterOutputEnded(t *testing.T) {
	fixture.RequireRoot(t)
	for mode, opts := range controlModes {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			rt, _ := testRuntime(t, opts...)
			for _, terminal := range []bool{false, true} {
				cfg := testSpec(t, "trap 'exit 3' USR1; echo gone; exec >&- 2>&- <&-; sleep 1000 & wait")
				cfg.Spec.Process.Terminal = terminal
				c := startTest(ctx, t, rt, "ended-"+mode, cfg)
				// The output ends with its last word in the log.
				for {
					rc, err := c.Logs(ctx)
					require.NoError(t, err)
					b, _ := io.ReadAll(rc)
					rc.Close()
					if bytes.Contains(b, []byte("gone")) {
						break
					}
					require.NoError(t, ctx.Err())
					time.Sleep(20 * time.Millisecond)
				}
				// Not yet copied to its end, the output may still reach
				// an attachment: it returns once it has, and it has
				// nothing of what came before.
				out := &fixture.SyncBuffer{}
				require.NoError(t, c.Attach(ctx, runtime.IO{Stdout: out}))
				require.NotContains(t, out.String(), "gone")
				st, err := c.State(ctx)
				require.NoError(t, err)
				require.Equal(t, runtime.StatusRunning, st, "Attach returned before the exit")
				if terminal {
					require.NoError(t, c.Resize(ctx, specs.Box{Height: 30, Width: 30}), "the terminal lives while the init does")
				}
				require.NoError(t, c.Kill(ctx, syscall.SIGUSR1))
				es, err := c.Wait(ctx)
				require.NoError(t, err)
				require.Equal(t, 3, es.Code)
				require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
			}
		})
	}
}

// The control socket is root's alone: its directory 0700, the socket 0600,
// and a user other than root cannot connect (root can: the check can
// fail).
func TestControlSocketRootOnly(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rt, e := testRuntime(t)
	c := startTest(ctx, t, rt, "rootonly", testSpec(t, "sleep 1000"))
	fi, err := os.Stat(filepath.Join(e.dir(c.ID()), controlDir))
	require.NoError(t, err)
	require.Equal(t, os.ModeDir|0o700, fi.Mode())
	fi, err = os.Stat(e.sockPath(c.ID()))
	require.NoError(t, err)
	require.Equal(t, os.ModeSocket|0o600, fi.Mode())
	require.Equal(t, uint32(0), fi.Sys().(*syscall.Stat_t).Uid)

	tool := filepath.Join(fixture.TenantTool(t), "tenant")
	for _, uid := range []uint32{65534, 0} {
		cmd := exec.Command(tool, "connect", e.sockPath(c.ID()))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		if uid == 0 {
			require.Equal(t, "connect: ok\n", string(out))
		} else {
			require.Equal(t, "connect: EACCES\n", string(out))
		}
	}
}

// Clients cannot block the process that serves the socket, nor make it
// fail: one that says nothing, a request too long, garbage, an unknown
// request, an attachment that sends a frame too large, and more
// connections than are served at once each get their answer (or are
// dropped), and through it all the container runs and its output is kept,
// and requests are answered again once the crowd is gone.
func TestControlSocketHostileClients(t *testing.T) {
	fixture.RequireRoot(t)
	for mode, opts := range controlModes {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			rt, e := testRuntime(t, opts...)
			cfg := testSpec(t, "i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.05; done")
			cfg.Spec.Process.Terminal = true
			c := startTest(ctx, t, rt, "hostile-"+mode, cfg)
			id := c.ID()

			silent := dialControl(t, e, id)
			_ = silent
			long := dialControl(t, e, id)
			_, err := long.Write(bytes.Repeat([]byte("a"), requestMax+10))
			require.NoError(t, err)
			err = readReply(t, long)
			require.Truef(t, errdefs.IsInvalidArgument(err), "a long request: %v", err)
			for _, req := range []string{"not json\n", `{"op":"format-disk"}` + "\n"} {
				conn := dialControl(t, e, id)
				_, err := conn.Write([]byte(req))
				require.NoError(t, err)
				err = readReply(t, conn)
				require.Truef(t, errdefs.IsInvalidArgument(err), "request %q: %v", req, err)
			}

			// An attachment sending a frame too large is dropped.
			bad := dialControl(t, e, id)
			_, err = bad.Write([]byte(`{"op":"attach","stdout":true}` + "\n"))
			require.NoError(t, err)
			br := bufio.NewReader(bad)
			require.NoError(t, bad.SetReadDeadline(time.Now().Add(time.Minute)))
			line, err := br.ReadBytes('\n')
			require.NoError(t, err)
			require.Equal(t, "{}\n", string(line))
			var h [8]byte
			h[0] = frameStdin
			binary.BigEndian.PutUint32(h[4:], 1<<30)
			_, err = bad.Write(h[:])
			require.NoError(t, err)
			for {
				if _, _, err = readFrame(br); err != nil {
					break
				}
			}
			require.ErrorIs(t, err, io.EOF, "the attachment is dropped")

			// A crowd: beyond maxConns, connections are refused at once.
			refused := 0
			var crowd []net.Conn
			for range maxConns + 8 {
				crowd = append(crowd, dialControl(t, e, id))
			}
			// Read all at once: a served connection says nothing.
			replies := make(chan string, len(crowd))
			deadline := time.Now().Add(3 * time.Second)
			for _, conn := range crowd {
				go func() {
					_ = conn.SetReadDeadline(deadline)
					line, err := bufio.NewReader(conn).ReadBytes('\n')
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						replies <- "served"
						return
					}
					var rep controlReply
					if err == nil {
						err = json.Unmarshal(line, &rep)
					}
					if err != nil {
						replies <- err.Error()
						return
					}
					replies <- rep.Class
				}()
			}
			for range crowd {
				switch r := <-replies; r {
				case "served":
				case "resource-exhausted":
					refused++
				default:
					t.Fatalf("a connection of the crowd: %s", r)
				}
			}
			require.GreaterOrEqual(t, refused, 8)
			for _, conn := range crowd {
				conn.Close()
			}
			silent.Close()

			// Answered again, the container unharmed, its output kept.
			for {
				err := e.ResizeTerminal(ctx, id, specs.Box{Height: 12, Width: 34})
				if err == nil {
					break
				}
				require.Truef(t, errdefs.IsResourceExhausted(err), "%v", err)
				require.NoError(t, ctx.Err())
				time.Sleep(50 * time.Millisecond)
			}
			out := &fixture.SyncBuffer{}
			actx, acancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- c.Attach(actx, runtime.IO{Stdout: out}) }()
			for !strings.Contains(out.String(), "tick-") {
				require.NoError(t, ctx.Err())
				time.Sleep(20 * time.Millisecond)
			}
			acancel()
			require.ErrorIs(t, <-done, context.Canceled)
			st, err := c.State(ctx)
			require.NoError(t, err)
			require.Equal(t, runtime.StatusRunning, st)
		})
	}
}

// Detached attachments are forgotten: attaching and detaching many more
// times than connections are served at once never runs out of them.
func TestDetachedAttachmentsForgotten(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rt, _ := testRuntime(t)
	cfg := testSpec(t, `while read line; do echo "got:$line"; done`)
	cfg.OpenStdin = true
	c := startTest(ctx, t, rt, "forgotten", cfg)
	for i := range 2 * maxConns {
		in, inW := io.Pipe()
		out := &fixture.SyncBuffer{}
		actx, acancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- c.Attach(actx, runtime.IO{Stdin: in, Stdout: out}) }()
		want := "got:" + strings.Repeat("x", i%7) + "\n"
		_, err := inW.Write([]byte(want[4:]))
		require.NoError(t, err, "attachment %d", i)
		for !strings.Contains(out.String(), want) {
			require.NoError(t, ctx.Err(), "attachment %d: %q", i, out.String())
			time.Sleep(5 * time.Millisecond)
		}
		acancel()
		require.ErrorIs(t, <-done, context.Canceled)
		inW.Close()
	}
}

// failingWriter fails every write, as a caller's closed stream does.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("the reader is gone") }

// A caller's writer that fails does not stop the copy of a terminal's
// output: the process writes on (it would block on a full terminal
// otherwise), exits, and its output is kept; for an init and an exec'd
// process alike.
func TestTerminalBrokenWriter(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rt, _ := testRuntime(t)
	const script = "head -c 1000000 /dev/zero | tr '\\0' x; echo; echo last; exit 5"
	cfg := testSpec(t, script)
	cfg.Spec.Process.Terminal = true
	cfg.IO = runtime.IO{Stdout: failingWriter{}}
	c := startTest(ctx, t, rt, "broken-writer", cfg)
	es, err := c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 5, es.Code)
	rc, err := c.Logs(ctx)
	require.NoError(t, err)
	b, err := io.ReadAll(rc)
	rc.Close()
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(string(b), "x\r\nlast\r\n"), "the log has it all")

	c = startTest(ctx, t, rt, "broken-writer-exec", testSpec(t, "sleep 1000"))
	p, err := c.Exec(ctx, &runtime.ProcessSpec{Args: []string{"/bin/sh", "-c", script}, Terminal: true}, runtime.IO{Stdout: failingWriter{}})
	require.NoError(t, err)
	es, err = p.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, 5, es.Code)
}

// Attachments that last, as many as a tenant's users open (asking for a
// stream the container never writes, so that none falls behind), never
// take the connections reopen and resize need: beyond maxAttach an
// attachment is refused as resource-exhausted, and the kubelet's log
// rotation and resizes are answered all the same.
func TestAttachmentsLeaveRoomForRequests(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rt, e := testRuntime(t)
	cfg := testSpec(t, "sleep 1000")
	cfg.Spec.Process.Terminal = true
	c := startTest(ctx, t, rt, "attach-crowd", cfg)
	id := c.ID()
	for i := range maxAttach {
		conn := dialControl(t, e, id)
		_, err := conn.Write([]byte(`{"op":"attach","stderr":true}` + "\n"))
		require.NoError(t, err)
		require.NoErrorf(t, readReply(t, conn), "attachment %d", i)
	}
	conn := dialControl(t, e, id)
	_, err := conn.Write([]byte(`{"op":"attach","stdout":true}` + "\n"))
	require.NoError(t, err)
	err = readReply(t, conn)
	require.Truef(t, errdefs.IsResourceExhausted(err), "an attachment beyond %d: %v", maxAttach, err)
	for range maxConns - maxAttach - 1 {
		require.NoError(t, c.Resize(ctx, specs.Box{Height: 10, Width: 20}))
	}
}

// StdinOnce's end of input is never lost: a client that sends more than
// the init's stdin pipe holds, ends its input and goes away while the
// init reads nothing yet still ends the init's input once the init reads
// it all (hostile review: the end was dropped when the client's
// connection ended first, and the init waited for EOF for ever).
func TestStdinOnceEndOutlivesTheClient(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rt, _ := testRuntime(t)
	cfg := testSpec(t, "sleep 8; wc -c; echo eof-seen")
	cfg.OpenStdin, cfg.StdinOnce = true, true
	c := startTest(ctx, t, rt, "stdin-once-end", cfg)
	actx, acancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- c.Attach(actx, runtime.IO{Stdin: bytes.NewReader(bytes.Repeat([]byte("x"), 300<<10)), Stdout: io.Discard})
	}()
	time.Sleep(time.Second) // the input is handed over, the pipe full
	acancel()
	require.ErrorIs(t, <-done, context.Canceled)
	st, err := c.Wait(ctx)
	require.NoError(t, err, "the init saw the end of its input")
	require.Equal(t, 0, st.Code)
	rc, err := c.Logs(ctx)
	require.NoError(t, err)
	b, err := io.ReadAll(rc)
	rc.Close()
	require.NoError(t, err)
	require.Contains(t, string(b), "eof-seen")
}

// Only a pseudo-terminal's master is taken from the console socket: a
// descriptor of anything else sent there (a regular file, a FIFO, the
// slave) is refused, never written to as the container's terminal.
func TestRecvMasterTakesOnlyAMaster(t *testing.T) {
	master, slavePath, err := console.NewPty()
	require.NoError(t, err)
	defer master.Close()
	slave, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	defer slave.Close()
	file, err := os.CreateTemp(t.TempDir(), "not-a-terminal")
	require.NoError(t, err)
	defer file.Close()
	send := func(f *os.File) (*os.File, error) {
		t.Helper()
		ours, theirs, err := consoleSocket()
		require.NoError(t, err)
		defer ours.Close()
		require.NoError(t, utils.SendFile(theirs, f))
		theirs.Close()
		return recvMaster(ours)
	}
	for name, f := range map[string]*os.File{"a regular file": file, "the slave": slave} {
		got, err := send(f)
		require.Errorf(t, err, "%s taken as the terminal's master", name)
		require.Nil(t, got)
	}
	fd, err := unix.Dup(int(master.Fd()))
	require.NoError(t, err)
	m := os.NewFile(uintptr(fd), "master")
	defer m.Close()
	got, err := send(m)
	require.NoError(t, err, "a master is taken")
	got.Close()
}
