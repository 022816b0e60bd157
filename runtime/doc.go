// Package runtime is berth's portable container API.
//
// A Runtime wraps one backend (a runtime/driver implementation: the
// embedded libcontainer engine, Docker, the disk-image engine) and hands out
// Container and Process handles. Everything that must hold whatever the
// engine is lives here, once:
//
//   - container IDs are validated (ValidateID) before any backend sees them;
//   - specs are checked (an OCI runtime spec plus berth's fields, Config);
//   - state transitions are checked: starting a running container,
//     pausing a stopped one, deleting a running one without force are
//     failed-precondition errors whatever the backend;
//   - user namespaces come from one ID pool (IDPool) for the whole host
//     (HostIDPoolDir), so that no two processes, state directories or
//     backends share a block; a state directory belongs to one backend;
//   - the security policy (SecurityPolicy): what loosens a container's
//     confinement is refused unless AllowPrivileged (the host's network,
//     PID and IPC namespaces alone under AllowHostNamespaces); bind sources on
//     kernel interface filesystems are refused always; every container
//     gets a seccomp profile (Docker's default unless the caller gives
//     one) that also denies the ioctls releasing or re-flagging a block
//     device, but for an allow-all profile under AllowUnfilteredSeccomp
//     (with AllowPrivileged), which runs without a filter;
//   - volumes go through the one volume.Manager and its Policy, and so
//     do a spec's binds, whose options keep their OCI meaning ("ro" is
//     read-only at the bind alone, "rro" all the way down; rslave and
//     rshared propagate, rshared only under AllowPrivileged); a hot
//     attach is recorded complete only once the container holds it;
//   - root disks go through the same manager and policy: on a backend
//     with root disks (a driver.DiskMaker) the runtime keeps each disk under
//     its state directory, attaches it like a volume and hands the backend
//     only the mounted path; no backend opens a manager of its own;
//   - a stopped container moves between state directories or hosts with
//     Container.Export and Runtime.Import, on any backend with root disks;
//     the import directory is read without following links, and a disk
//     that is not a regular file of it is refused;
//   - containers share other containers' network, IPC, UTS, PID and user
//     namespaces by naming them (Config.Join, on backends with
//     Capabilities.JoinNamespaces), as a Kubernetes pod's members share
//     its infra container's: each join is checked against the security
//     policy and recorded under the state directory, a container others
//     joined is not deleted before them, and a shared user namespace's ID
//     block stays allocated until the last container holding it is
//     deleted; Container.OpenNamespace and NamespacePath reach a created or
//     running container's namespaces (Capabilities.NamespaceFiles);
//   - Container.Stop is TERM, a grace, then KILL, on every backend;
//   - Runtime.Events streams the containers' events (created, started,
//     paused, resumed, stopped with the exit status, deleted) on every
//     backend: from the engine when it reports them (a
//     driver.EventSource, Docker's), else from the runtime's own actions,
//     a wait for each running container's exit and a listing every second
//     for what other processes do; in order for each container, to any
//     number of subscribers, none of which can hold up the runtime (one
//     that falls more than its buffer behind loses its subscription with
//     resource-exhausted);
//   - every error carries a github.com/containerd/errdefs class and the
//     container's ID; operations a backend lacks (it does not implement
//     the optional driver interface, see package driver) are answered
//     not-implemented here.
//
// Runtime.As and Container.As reach a backend's native types, as
// gocloud.dev's As does: each backend's documentation lists the types they
// accept. Backend-only operations (the parallels backend's disk copies)
// are reached that way, never by asserting on a backend's types.
//
// Output of a container goes to writers given in Config.IO, and in any case
// to a log kept by the backend, capped with rotation (Config.Log), and read
// back with Container.Logs.
package runtime
