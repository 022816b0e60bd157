package libcontainer_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/backends/libcontainer"
	"github.com/berthrun/berth/internal/fixture"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/runtime/runtimetest"
)

// buildSupervisor builds examples/berth-supervisor into dir.
func buildSupervisor(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "berth-supervisor")
	out, err := exec.Command("go", "build", "-tags", "seccomp", "-o", bin, "../../examples/berth-supervisor").CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

// Supervisors run the binary named, what was opened even if the path is
// replaced later, and keep exit codes for any process on the root.
func TestSupervisorBinary(t *testing.T) {
	fixture.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rootfs := fixture.BusyboxTB(t)
	dir := fixture.TempDir(t)
	bin := buildSupervisor(t, dir)
	var want syscall.Stat_t
	require.NoError(t, syscall.Stat(bin, &want))
	root := filepath.Join(dir, "state")
	rt := openRoot(t, root, libcontainer.WithSupervisorBinary(bin))

	// The path now names something else: what Open checked still runs.
	notSupervisor := filepath.Join(dir, "other")
	require.NoError(t, os.WriteFile(notSupervisor, []byte("#!/bin/sh\nexit 0\n"), 0o755))
	require.NoError(t, os.Rename(notSupervisor, bin))

	c, err := rt.Create(ctx, runtimetest.NewID("supbin"), exitOnUSR1(rootfs))
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx))
	pids := supervisorPids(t, root)
	require.Len(t, pids, 1)
	var got syscall.Stat_t
	require.NoError(t, syscall.Stat("/proc/"+strconv.Itoa(pids[0])+"/exe", &got))
	require.Equal(t, [2]uint64{want.Dev, want.Ino}, [2]uint64{got.Dev, got.Ino}, "the supervisor runs the binary Open checked")

	// Another process on the root, without the option, waits through it.
	oc, err := openRoot(t, root).Get(ctx, c.ID())
	require.NoError(t, err)
	requireExit5(ctx, t, oc, "the small supervisor keeps the exit code")
	require.NoError(t, c.Delete(ctx, runtime.DeleteOptions{}))
	requireNothingLeft(t, root, c.ID())
}

// A binary that may not be trusted with every container is refused at
// Open, invalid-argument naming it, before anything is written.
func TestSupervisorBinaryRefused(t *testing.T) {
	fixture.RequireRoot(t)
	dir := fixture.TempDir(t)
	good := filepath.Join(dir, "good")
	require.NoError(t, os.WriteFile(good, []byte("#!/bin/sh\n"), 0o755))
	mk := func(name string, mode os.FileMode, uid int) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte("#!/bin/sh\n"), mode))
		require.NoError(t, os.Chmod(p, mode))
		require.NoError(t, os.Chown(p, uid, 0))
		return p
	}
	link := filepath.Join(dir, "link")
	require.NoError(t, os.Symlink(good, link))
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o755))
	for _, p := range []string{
		"berth-supervisor", "relative/berth-supervisor", dir + "/./good", "",
		filepath.Join(dir, "missing"),
		link, fifo, dir,
		mk("noexec", 0o644, 0),
		mk("groupw", 0o775, 0),
		mk("otherw", 0o757, 0),
		mk("tenant", 0o755, 1000),
		filepath.Join(good, "x"),
	} {
		root := filepath.Join(dir, "state-"+strings.ReplaceAll(filepath.Base(p), ".", "_"))
		_, err := libcontainer.Open(root, libcontainer.WithSupervisorBinary(p))
		require.Truef(t, errdefs.IsInvalidArgument(err), "%q: %v", p, err)
		require.Contains(t, err.Error(), p)
		require.NoDirExists(t, root, "nothing written")
	}
}

// fakeSupervisor is a program started as a supervisor that is none: it
// writes its pid to DIR/NAME.pid (NAME: its file's name) and, by NAME,
// says nothing and exits, reports another protocol and lingers, or says
// nothing and lingers. (A script cannot be one: the binary is executed
// through a descriptor closed on exec, which its interpreter cannot open.)
const fakeSupervisor = `package main

import (
	"os"
	"path/filepath"
	"strconv"
	"time"
)

func main() {
	name := filepath.Base(os.Args[0])
	_ = os.WriteFile(filepath.Join(os.Getenv("FAKE_DIR"), name+".pid"), []byte(strconv.Itoa(os.Getpid())), 0o600)
	switch name {
	case "silent":
		os.Stderr.WriteString("not a supervisor\n")
		return
	case "protocol":
		os.NewFile(3, "ready").WriteString(` + "`" + `{"proto":99}` + "`" + `)
		os.NewFile(3, "ready").Close()
	}
	time.Sleep(time.Hour)
}
`

// A binary that is not this berth's supervisor fails the create (one that
// says nothing fails it once the create's context ends) naming it, and
// leaves nothing: no container, no cgroup, no process.
func TestSupervisorBinaryNotASupervisor(t *testing.T) {
	fixture.RequireRoot(t)
	rootfs := fixture.BusyboxTB(t)
	dir := fixture.TempDir(t)
	src := filepath.Join(dir, "fake.go")
	require.NoError(t, os.WriteFile(src, []byte(fakeSupervisor), 0o644))
	t.Setenv("FAKE_DIR", dir)
	for name, class := range map[string]func(error) bool{
		"silent":   errdefs.IsFailedPrecondition,
		"protocol": errdefs.IsFailedPrecondition,
		"hangs":    errdefs.IsDeadlineExceeded,
	} {
		t.Run(name, func(t *testing.T) {
			bin := filepath.Join(dir, name)
			cmd := exec.Command("go", "build", "-o", bin, src)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s", out)
			root := filepath.Join(dir, "state-"+name)
			rt := openRoot(t, root, libcontainer.WithSupervisorBinary(bin))
			id := runtimetest.NewID("notsup")
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			_, err = rt.Create(ctx, id, exitOnUSR1(rootfs))
			require.Truef(t, class(err), "%v", err)
			require.Contains(t, err.Error(), bin)
			b, err := os.ReadFile(filepath.Join(dir, name+".pid"))
			require.NoError(t, err)
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			require.NoError(t, err)
			require.Eventually(t, func() bool { return syscall.Kill(pid, 0) != nil }, 10*time.Second, 50*time.Millisecond, "the process is gone")
			requireNothingLeft(t, root, id)
			list, err := rt.List(context.Background())
			require.NoError(t, err)
			require.Empty(t, list)
		})
	}
}
