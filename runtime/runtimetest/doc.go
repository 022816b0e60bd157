// Package runtimetest is the conformance suite every berth backend runs.
//
// A backend's conformance test is a few lines: build a Harness and call
// Run. The suite covers the whole portable API (lifecycle, exec, kill, wait,
// pause, live update, stats, logs and CRI log files, user namespaces,
// restarts of the calling program, concurrency) and every error class,
// reads limits and the freezer state back from the host's cgroup files,
// and checks that deleting a container leaves no cgroup, mount or state
// behind. Tests of optional features skip when the backend's Capabilities
// say it lacks them, and then check that the operation reports
// not-implemented; they never look at the backend's name.
package runtimetest
