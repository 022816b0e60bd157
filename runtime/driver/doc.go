// Package driver defines the contract a berth backend implements.
//
// Callers never use this package directly: they hold the concrete types of
// package runtime, which validate identifiers, specs and state transitions
// once, resolve user namespaces, volumes and root disks, and wrap every
// error with the container's ID. A backend only translates the
// already-checked request into its engine's terms.
//
// # A core and optional parts
//
// Every backend implements Runtime: the lifecycle (create, start, wait,
// kill, delete, state, list), Name, Capabilities, As and Close. Each
// further operation is an interface of its own, matching a field of
// Capabilities:
//
//	Capabilities.Exec            Execer
//	Capabilities.Pause           Pauser
//	Capabilities.Update          Updater
//	Capabilities.Stats           StatsReader
//	Capabilities.Logs            Logger (and LogFollower, to follow the log as it grows)
//	Capabilities.HotAttach       VolumeAttacher
//	Capabilities.DiskResize      DiskResizer
//	Capabilities.RootDisk        DiskMaker
//	Capabilities.Snapshot        Snapshotter, or DiskMaker on a backend with root disks
//	Capabilities.Events          EventSource
//	Capabilities.NamespaceFiles  NamespaceOpener
//
// runtime.New finds them with type assertions. A capability claimed
// without its interface is refused there with invalid-argument (naming the
// backend and the capability); an interface whose capability is false is
// never called. An operation a backend lacks is answered with
// errdefs.ErrNotImplemented by the portable layer, so a backend writes no
// stub for it. ContainerAser, optional too, reaches a backend's native
// types for one container (runtime.Container.As).
//
// Errors returned by a backend carry a class from github.com/containerd/errdefs
// (not-found, already-exists, failed-precondition, not-implemented...). An
// operation the engine cannot do in a given case (a spec it cannot
// express) returns errdefs.ErrNotImplemented.
package driver
