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

// EngineTracker is a Harness whose engine keeps state of its own for each
// container that the runtime no longer names once the container is
// deleted (a daemon's task, the process that serves it). Track is called
// while container id exists; the func it returns lists, after Delete,
// what of that state is left (an empty list: nothing).
type EngineTracker interface {
	Track(t *testing.T, rt *runtime.Runtime, id string) func() []string
}

// engineLeftovers returns h's check for what the engine keeps of
// container id, or one that finds nothing.
func engineLeftovers(t *testing.T, h Harness, rt *runtime.Runtime, id string) func() []string {
	if et, ok := h.(EngineTracker); ok {
		return et.Track(t, rt, id)
	}
	return func() []string { return nil }
}
