package reap

import (
	"os"
	"os/exec"
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
