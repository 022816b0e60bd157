package reap

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A process's name may hold parentheses and spaces: the state is read
// after the last closing parenthesis.
func TestStatFields(t *testing.T) {
	f, err := StatFields([]byte("42 (a) Z (b) R 1 2 3\n"))
	require.NoError(t, err)
	require.Equal(t, "R", string(f[0]))
	require.Equal(t, "3", string(f[len(f)-1]))
	for _, bad := range []string{"", "42 no-name R 1", "42 (name)", "42 (name)  \n"} {
		_, err := StatFields([]byte(bad))
		require.Error(t, err, "%q", bad)
	}
}

func TestZombie(t *testing.T) {
	require.False(t, Zombie(os.Getpid()))
	require.False(t, Zombie(-1))
	cmd := exec.Command("true")
	require.NoError(t, cmd.Start())
	// Not waited for: it is a zombie once it has exited.
	require.Eventually(t, func() bool { return Zombie(cmd.Process.Pid) }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, cmd.Wait())
	require.False(t, Zombie(cmd.Process.Pid))
}

// Signal reaches the process its check accepts, and nothing once the
// process is gone or the check refuses it.
func TestSignal(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	require.NoError(t, cmd.Start())
	pid := cmd.Process.Pid
	refused := errors.New("not the one")
	require.ErrorIs(t, Signal(pid, syscall.SIGTERM, func() error { return refused }), refused)
	require.NoError(t, Signal(pid, syscall.SIGTERM, func() error { return nil }))
	err := cmd.Wait()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, syscall.SIGTERM, ee.Sys().(syscall.WaitStatus).Signal())
	// Reaped: its pid names nothing (or another process the check refuses).
	err = Signal(pid, syscall.SIGKILL, func() error { return ErrGone })
	require.ErrorIs(t, err, ErrGone)
}
