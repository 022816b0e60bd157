package libcontainer

import (
	"os"
	goruntime "runtime"

	lc "github.com/opencontainers/runc/libcontainer"

	// The cgroup devices controller: without it libcontainer cannot apply
	// device rules and refuses configs that carry them.
	_ "github.com/opencontainers/cgroups/devices"
	// nsenter's C constructor runs before the Go runtime in a re-executed
	// init and joins the container's namespaces; it does nothing otherwise.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
)

// The main goroutine keeps the main thread for the life of the process, so
// no other goroutine ever runs there. runc's libcontainer, as it creates a
// container, joins the container's mount namespace on a goroutine that
// locks its thread and returns without unlocking it, for Go to throw the
// thread away. Go cannot end the main thread: when that goroutine ran
// there, Go parks the thread instead, still in the container's namespace,
// until the process exits. The namespace then outlives the container and
// keeps its mounts: the volumes' filesystems, hence their loop devices,
// past the container's deletion, for as long as the caller (attached mode)
// or the monitor lives. Locking in init, while package initialization runs
// on the main thread, is the only way to hold that thread for main.
func init() {
	goruntime.LockOSThread()
}

// Init must be the first call in main (and TestMain) of every program that
// uses this backend. In a process re-executed as a container's init or as a
// container monitor it does that job and never returns; otherwise it
// returns at once.
func Init() {
	if len(os.Args) < 2 {
		return
	}
	switch os.Args[1] {
	case "init":
		if os.Getenv("_LIBCONTAINER_INITPIPE") != "" {
			lc.Init() // never returns
		}
	case supervisorArg:
		os.Exit(runSupervisor(os.Args[2:]))
	}
}
