// Package driver defines the contract a berth backend implements.
//
// Callers never use this package directly: they hold the concrete types of
// package runtime, which validate identifiers, specs and state transitions
// once, resolve user namespaces, volumes and root disks, and wrap every
// error with the container's ID. A backend only translates the
// already-checked request into its engine's terms.
//
// Errors returned by a backend carry a class from github.com/containerd/errdefs
// (not-found, already-exists, failed-precondition, not-implemented...). An
// operation the engine cannot do returns errdefs.ErrNotImplemented and the
// matching field of Capabilities is false.
package driver
