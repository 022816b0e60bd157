//go:build !cgo || !seccomp

package libcontainer

// seccompBuilt: built without the seccomp tag (or cgo), libcontainer
// cannot apply a seccomp profile, and the engine refuses to run a container
// without the one berth gives it.
const seccompBuilt = false
