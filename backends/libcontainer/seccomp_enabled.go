//go:build cgo && seccomp

package libcontainer

// seccompBuilt: this program applies seccomp profiles (libcontainer built
// with libseccomp).
const seccompBuilt = true
