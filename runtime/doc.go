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
//   - user namespaces come from one ID pool (IDPool), recorded under the
//     state directory so that several processes never share a block;
//   - every error carries a github.com/containerd/errdefs class and the
//     container's ID; operations a backend lacks are not-implemented.
//
// Output of a container goes to writers given in Config.IO, or, without
// any, to a log kept by the backend and read back with Container.Logs.
package runtime
