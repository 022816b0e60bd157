// Package backends groups berth's engines. Each subpackage implements
// runtime/driver for one engine and passes the conformance suite in
// runtime/runtimetest:
//
//   - libcontainer: runc's libcontainer in process, no daemon (the default).
//   - docker: the Docker Engine through its API, on a plain or a
//     userns-remap daemon.
//   - parallels: each container's root filesystem on a disk image of its
//     own, run by the embedded engine.
//
// Callers choose a backend, open it, and wrap it with runtime.New; nothing
// in runtime/, volume/ or image/ imports a backend.
package backends
