package libcontainer_test

import (
	"fmt"
	"os"
	"os/exec"
	goruntime "runtime"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fixture"
)

// mainThreadChild does what runc's mount-source thread does while a
// container is created (lock the thread, join another mount namespace,
// return without unlocking so that Go throws the thread away) on a
// goroutine that Go runs on the main thread if it may: with one P, the
// main goroutine blocking on it hands its thread over. It reports whether
// the main thread, the one /proc/self/ns names, kept its mount namespace.
func mainThreadChild() int {
	before, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	goruntime.GOMAXPROCS(1)
	done := make(chan error)
	go func() {
		goruntime.LockOSThread()
		done <- unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS)
	}()
	if err := <-done; err != nil {
		fmt.Println("unshare:", err)
		return 1
	}
	after, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	if after != before {
		fmt.Printf("the main thread was left in mount namespace %s (was %s)\n", after, before)
		return 0
	}
	fmt.Println("the main thread kept its mount namespace")
	return 0
}

// A process using this backend never has its main thread left in a mount
// namespace that a thread-locked goroutine entered (as runc's does for
// every container it creates): that thread would keep a deleted
// container's namespace, its mounts and its volumes' loop devices for the
// life of the caller (attached mode) or of the monitor.
func TestMainThreadKeepsItsMountNamespace(t *testing.T) {
	fixture.RequireRoot(t)
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=mainthread")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Equal(t, "the main thread kept its mount namespace\n", string(out))
}
