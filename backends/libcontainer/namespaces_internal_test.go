package libcontainer

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"
)

// A handle on an init's /proc directory reaches that process only: a
// wrong start time (another process took the pid) is refused, and once
// the process has exited every lookup through the handle fails, whoever
// has the pid by then.
func TestInitProcReachesItsProcessOnly(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := cmd.Process.Pid
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(t, err)
	start, err := statStartTime(b)
	require.NoError(t, err)

	_, err = openInitProc(pid, start+1)
	require.Truef(t, errdefs.IsFailedPrecondition(err), "another start time: %v", err)
	_, err = openInitProc(0, start)
	require.Truef(t, errdefs.IsFailedPrecondition(err), "no pid: %v", err)

	p, err := openInitProc(pid, start)
	require.NoError(t, err)
	defer p.Close()
	f, err := p.namespace(specs.NetworkNamespace)
	require.NoError(t, err)
	want, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	require.NoError(t, err)
	got, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.Equal(t, fmt.Sprintf("/proc/%d/ns/net", pid), f.Name())
	f.Close()
	_, err = p.namespace("bogus")
	require.True(t, errdefs.IsInvalidArgument(err))

	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	_, err = p.namespace(specs.NetworkNamespace)
	require.Truef(t, errdefs.IsFailedPrecondition(err), "after the exit: %v", err)
	_, err = p.read("stat")
	require.Truef(t, errdefs.IsFailedPrecondition(err), "after the exit: %v", err)
}

func TestStatStartTime(t *testing.T) {
	// A command name with spaces and parentheses of its own.
	stat := "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 2461696 168 18446744073709551615\n"
	got, err := statStartTime([]byte(stat))
	require.NoError(t, err)
	require.Equal(t, uint64(987654), got)
	_, err = statStartTime([]byte("4242 (a) S 1"))
	require.Error(t, err)
}
