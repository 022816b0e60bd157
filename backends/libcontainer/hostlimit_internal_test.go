package libcontainer

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

// A start that fails for want of a host resource is told in one line,
// resource-exhausted, naming the limit: the Go crash dump of an init that
// could not make a thread is not the message.
func TestHostLimitError(t *testing.T) {
	dump := "runc init failed: runtime: failed to create new OS thread (have 5 already; errno=11)\nruntime: may need to increase max user processes (ulimit -u)\nfatal error: newosproc\n\ngoroutine 1 [running]:\nruntime.throw(...)"
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("clone: %w", syscall.EAGAIN), "kernel."},
		{errors.New(dump), "no process or thread"},
		{fmt.Errorf("open: %w", syscall.EMFILE), "RLIMIT_NOFILE"},
		{fmt.Errorf("open: %w", syscall.ENFILE), "fs.file-max"},
		{fmt.Errorf("mmap: %w", syscall.ENOMEM), "out of memory"},
	} {
		err := hostLimitError(c.err)
		require.Truef(t, errdefs.IsResourceExhausted(err), "%v: %v", c.err, err)
		require.Contains(t, err.Error(), c.want)
		require.NotContains(t, err.Error(), "\n", "one line")
		require.True(t, errdefs.IsResourceExhausted(classifyStart(c.err)))
	}
	require.NoError(t, hostLimitError(errors.New("exec: no such file")))
	require.False(t, errdefs.IsResourceExhausted(classifyStart(fmt.Errorf("x: %w", errdefs.ErrNotFound))))

	// The limit named is the host's lower one.
	name, limit := taskLimit()
	require.True(t, strings.HasPrefix(name, "kernel."), name)
	require.Positive(t, limit)
	tasks, err := hostTasks()
	require.NoError(t, err)
	require.Positive(t, tasks)
}
