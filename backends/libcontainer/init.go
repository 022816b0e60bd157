package libcontainer

import (
	"os"

	lc "github.com/opencontainers/runc/libcontainer"

	// The cgroup devices controller: without it libcontainer cannot apply
	// device rules and refuses configs that carry them.
	_ "github.com/opencontainers/cgroups/devices"
	// nsenter's C constructor runs before the Go runtime in a re-executed
	// init and joins the container's namespaces; it does nothing otherwise.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
)

// monitorArg is the first argument of a re-executed monitor.
const monitorArg = "berth-monitor"

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
	case monitorArg:
		os.Exit(runMonitor(os.Args[2:]))
	}
}
