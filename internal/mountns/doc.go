// Package mountns puts mounts into, and takes them out of, the mount
// namespace of a running container through its init's pid, the way both
// the embedded engine and the Docker backend attach volumes while a
// container runs: a detached mount (open_tree or fsmount) prepared on the
// host is moved into place by a throwaway OS thread that entered the
// container's mount namespace, and is known afterwards by its mount ID, so
// that a detach takes out that mount wherever the tenant moved it.
//
// Inside the container every path is the tenant's to shape: the helpers
// resolve paths within the container's root and never through a link out of
// it, open what they look at O_PATH (nothing blocks on a FIFO), and refuse
// what is not of the expected type with failed-precondition.
package mountns
