package runtimetest

import (
	"testing"

	"github.com/berthrun/berth/runtime"
)

// Harness adapts one backend to the suite.
type Harness interface {
	// Open returns a runtime on fresh state for one test; the harness
	// closes it when the test ends.
	Open(t *testing.T) *runtime.Runtime
	// Reopen returns a second runtime on the same state as rt, as a
	// restarted program would open it.
	Reopen(t *testing.T, rt *runtime.Runtime) *runtime.Runtime
	// Config returns a config that runs args from a busybox root
	// filesystem (a rootfs directory, an image, whatever the backend
	// takes).
	Config(t *testing.T, args ...string) *runtime.Config
	// Leftovers lists what the backend still holds on the host for the
	// container id of rt (state directories, mounts, devices) beyond the
	// cgroups the suite checks itself. It is called after Delete; an
	// empty list means nothing was left behind.
	Leftovers(t *testing.T, rt *runtime.Runtime, id string) []string
}
