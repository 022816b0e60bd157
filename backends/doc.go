// Package backends groups berth's engines. Each subpackage implements
// runtime/driver for one engine and passes the conformance suite in
// runtime/runtimetest:
//
//   - libcontainer: runc's libcontainer in process, no daemon (the default).
//
// Callers choose a backend, open it, and wrap it with runtime.New; nothing
// in runtime/, volume/ or image/ imports a backend.
package backends
