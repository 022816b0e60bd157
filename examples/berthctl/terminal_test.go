package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// ptySession is berthctl run on a terminal of the test's: its stdin,
// stdout and stderr are the terminal, which is its controlling terminal
// (so that a resize of the window sends it SIGWINCH, as a terminal
// emulator's does), and the test types into the other side and reads
// what berthctl writes there.
type ptySession struct {
	t      *testing.T
	master console.Console
	slave  *os.File
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    bytes.Buffer
	read   chan struct{}
	done   chan struct{}
}

func startOnTerminal(t *testing.T, size console.WinSize, args ...string) *ptySession {
	t.Helper()
	master, slavePath, err := console.NewPty()
	require.NoError(t, err)
	require.NoError(t, master.Resize(size))
	slave, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	s := &ptySession{t: t, master: master, slave: slave, read: make(chan struct{}, 1), done: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	s.cmd = exec.CommandContext(ctx, bin, append([]string{"--root", stateRoot}, args...)...)
	s.cmd.Stdin, s.cmd.Stdout, s.cmd.Stderr = slave, slave, slave
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	require.NoError(t, s.cmd.Start())
	go func() {
		defer close(s.done)
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			if n > 0 {
				s.mu.Lock()
				s.out.Write(buf[:n])
				s.mu.Unlock()
				select {
				case s.read <- struct{}{}:
				default:
				}
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			_ = s.cmd.Process.Kill()
			_ = s.cmd.Wait()
		}
		slave.Close()
		master.Close()
	})
	return s
}

func (s *ptySession) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// waitFor waits until the terminal has shown want, after what it showed
// before from.
func (s *ptySession) waitFor(from int, want string) int {
	s.t.Helper()
	deadline := time.After(time.Minute)
	for {
		out := s.output()
		if i := strings.Index(out[from:], want); i >= 0 {
			return from + i + len(want)
		}
		select {
		case <-s.read:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			s.t.Fatalf("the terminal never showed %q; it showed %q", want, out)
		}
	}
}

func (s *ptySession) typeIn(text string) {
	s.t.Helper()
	_, err := s.master.Write([]byte(text))
	require.NoError(s.t, err)
}

// wait returns berthctl's exit code.
func (s *ptySession) wait() int {
	s.t.Helper()
	err := s.cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !asExitError(err, &ee) {
		s.t.Fatalf("berthctl: %v", err)
	}
	return s.cmd.ProcessState.ExitCode()
}

func asExitError(err error, ee **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	*ee = e
	return ok
}

// echoOn reports whether the test's terminal echoes: berthctl's raw mode
// turns it off, and it must be back once berthctl ends.
func (s *ptySession) echoOn() bool {
	tio, err := unix.IoctlGetTermios(int(s.slave.Fd()), unix.TCGETS)
	require.NoError(s.t, err)
	return tio.Lflag&unix.ECHO != 0
}

// TestRunInteractiveTerminal is `docker run -it`: the container's shell
// sees a terminal of the caller's window size, follows its resizes, gets
// ^C as typed (the shell's terminal sends SIGINT), and berthctl exits
// with the shell's code and gives the caller's terminal its mode back.
func TestRunInteractiveTerminal(t *testing.T) {
	requireEngine(t)
	id := "tty-run"
	cleanup(t, id)
	s := startOnTerminal(t, console.WinSize{Height: 31, Width: 97}, "run", "-it", "--rm", "--name", id, "--rootfs", rootfs, "--", "/bin/sh")
	s.typeIn("test -t 0 && test -t 1 && echo IS''A''TTY; stty size\r")
	at := s.waitFor(0, "ISATTY")
	at = s.waitFor(at, "31 97")
	assert.False(t, s.echoOn(), "the caller's terminal is raw while the shell runs")

	// The window grows: the kernel tells berthctl, which tells the
	// container's terminal.
	require.NoError(t, s.master.Resize(console.WinSize{Height: 44, Width: 120}))
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.typeIn("stty size\r")
		if strings.Contains(s.output()[at:], "44 120") || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	at = s.waitFor(at, "44 120")

	// ^C reaches the container's terminal as typed: it interrupts the
	// shell's foreground job, not berthctl.
	s.typeIn("sleep 100\r")
	time.Sleep(500 * time.Millisecond)
	s.typeIn("\x03")
	s.typeIn("echo AFTER''SLEEP $?\r")
	at = s.waitFor(at, "AFTERSLEEP 130")

	s.typeIn("exit 7\r")
	assert.Equal(t, 7, s.wait())
	assert.True(t, s.echoOn(), "berthctl gives the terminal its mode back")
	assert.NotContains(t, s.output()[at:], "\r\r\n", "in raw mode the caller's terminal passes the container's CR LF as it is")
}

// TestExecInteractiveTerminal is `docker exec -it` into a running
// container: its own terminal, of the caller's size, resizable, and the
// process's exit code.
func TestExecInteractiveTerminal(t *testing.T) {
	requireEngine(t)
	id := "tty-exec"
	ok(t, "create", "--name", id, "--rootfs", rootfs, "--", "sleep", "300")
	cleanup(t, id)
	ok(t, "start", id)
	s := startOnTerminal(t, console.WinSize{Height: 25, Width: 81}, "exec", "-it", id, "--", "/bin/sh")
	s.typeIn("tty; stty size\r")
	at := s.waitFor(0, "/dev/pts/")
	at = s.waitFor(at, "25 81")
	require.NoError(t, s.master.Resize(console.WinSize{Height: 50, Width: 132}))
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.typeIn("stty size\r")
		if strings.Contains(s.output()[at:], "50 132") || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.waitFor(at, "50 132")
	s.typeIn("exit 3\r")
	assert.Equal(t, 3, s.wait())
	assert.True(t, s.echoOn())
	// The container goes on.
	assert.Equal(t, "running", psRows(t)[id][0])
}

// TestRunTerminalWithoutCallerTerminal: -t gives the container a terminal
// even when berthctl's own streams are pipes; nothing is typed in.
func TestRunTerminalWithoutCallerTerminal(t *testing.T) {
	requireEngine(t)
	r := berthctl(t, "run", "-t", "--rm", "--rootfs", rootfs, "--", "/bin/sh", "-c", "test -t 1 && echo on a terminal; exit 5")
	assert.Equal(t, 5, r.code, "stderr %q", r.stderr)
	assert.Equal(t, "on a terminal\r\n", r.stdout)
}

// TestShortFlagsCombined: -it is -i -t, and only among the flags: the
// container's own arguments are never split.
func TestShortFlagsCombined(t *testing.T) {
	requireEngine(t)
	r := invoke(t, "hello\n", "--root", stateRoot, "run", "-i", "--rm", "--rootfs", rootfs, "/bin/sh", "-c", `read l; echo "$l" "$0"`, "-it")
	assert.Equal(t, 0, r.code, "stderr %q", r.stderr)
	assert.Equal(t, "hello -it\n", r.stdout)
}
