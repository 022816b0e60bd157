package main

import (
	"bufio"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/internal/fixture"
)

// eventStream is a `berthctl events` process whose lines a test reads.
type eventStream struct {
	cmd    *exec.Cmd
	lines  chan string // closed at the end of its output
	stderr fixture.SyncBuffer
	stash  map[string][]string
}

// startEvents runs `berthctl ARGS... events` until the test ends.
func startEvents(t *testing.T, args ...string) *eventStream {
	t.Helper()
	s := &eventStream{cmd: exec.Command(bin, append(args, "events")...), lines: make(chan string, 1024), stash: map[string][]string{}}
	stdout, err := s.cmd.StdoutPipe()
	require.NoError(t, err)
	s.cmd.Stderr = &s.stderr
	require.NoError(t, s.cmd.Start())
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			_ = s.cmd.Process.Kill()
			_ = s.cmd.Wait()
		}
	})
	go func() {
		defer close(s.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
	}()
	return s
}

// next returns the fields of the next line about container id.
func (s *eventStream) next(t *testing.T, id string, timeout time.Duration) ([]string, bool) {
	t.Helper()
	deadline := time.After(timeout)
	for len(s.stash[id]) == 0 {
		select {
		case l, ok := <-s.lines:
			require.True(t, ok, "berthctl events ended: %s", s.stderr.String())
			f := strings.Fields(l)
			require.GreaterOrEqual(t, len(f), 3, "line %q", l)
			_, err := time.Parse(time.RFC3339Nano, f[0])
			require.NoError(t, err, "line %q starts with its time", l)
			s.stash[f[2]] = append(s.stash[f[2]], l)
		case <-deadline:
			return nil, false
		}
	}
	l := s.stash[id][0]
	s.stash[id] = s.stash[id][1:]
	return strings.Fields(l), true
}

// expect checks that the next line about id is its event typ, with extra
// fields after the ID.
func (s *eventStream) expect(t *testing.T, id, typ string, extra ...string) {
	t.Helper()
	f, ok := s.next(t, id, time.Minute)
	require.True(t, ok, "no %s event of %s", typ, id)
	assert.Equal(t, append([]string{typ, id}, extra...), f[1:])
}

// ready returns once the events of containers created from now on reach
// the stream: berthctl prints nothing before the first event, so probe
// containers are made (and kept a while: another process's create is seen
// by a listing on the embedded engine) until one shows. run runs berthctl
// on the stream's state.
func (s *eventStream) ready(t *testing.T, run func(args ...string) string, rootfsArgs ...string) {
	t.Helper()
	for i := range 10 {
		id := fmt.Sprintf("evprobe%d", i)
		run(append(append([]string{"create", "--name", id}, rootfsArgs...), "--", "/bin/true")...)
		_, ok := s.next(t, id, 3*time.Second)
		run("rm", id)
		if ok {
			return
		}
	}
	t.Fatal("berthctl events shows no event")
}

// interrupt ends the stream with SIGINT, which is its ordinary end.
func (s *eventStream) interrupt(t *testing.T) {
	t.Helper()
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGINT))
	for range s.lines {
	}
	require.NoError(t, s.cmd.Wait(), "exit 0 on SIGINT; stderr %q", s.stderr.String())
	assert.Empty(t, s.stderr.String())
}

// berthctl events on the embedded engine: another process's actions, and
// an exit, each on a line of its own, until interrupted.
func TestEvents(t *testing.T) {
	requireEngine(t)
	const id = "events"
	cleanup(t, id)
	s := startEvents(t, "--root", stateRoot)
	s.ready(t, func(args ...string) string { return ok(t, args...) }, "--rootfs", rootfs)

	ok(t, "create", "--name", id, "--rootfs", rootfs, "--", "/bin/sleep", "300")
	s.expect(t, id, "created")
	ok(t, "start", id)
	s.expect(t, id, "started")
	ok(t, "pause", id)
	s.expect(t, id, "paused")
	ok(t, "resume", id)
	s.expect(t, id, "resumed")
	ok(t, "kill", id)
	s.expect(t, id, "stopped", "exit=137", "signal=SIGKILL")
	ok(t, "rm", id)
	s.expect(t, id, "deleted")
	s.interrupt(t)

	requireFailure(t, berthctl(t, "events", "extra"), "invalid-argument")
}

// berthctl events on Docker: the daemon's own events.
func TestDockerEvents(t *testing.T) {
	t.Parallel()
	d := newDockerCtl(t)
	const id = "events"
	s := startEvents(t, "--backend", "docker", "--docker-host", dockerHost, "--root", d.root)
	s.ready(t, d.ok, "--image", d.image)

	r := d.run("", "run", "--name", id, "--image", d.image, "--", "/bin/sh", "-c", "exit 3")
	require.Equal(t, 3, r.code, r.stderr)
	s.expect(t, id, "created")
	s.expect(t, id, "started")
	s.expect(t, id, "stopped", "exit=3")
	d.ok("rm", id)
	s.expect(t, id, "deleted")
	s.interrupt(t)
}
