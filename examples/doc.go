// Package examples holds programs that use berth as a caller would:
//
//   - berthctl: a command-line client over the library, every operation.
//   - quickstart: one container on the embedded engine, step by step.
//   - berth-cri: the Kubernetes CRI over the library, on a unix socket.
//   - berth-supervisor: the embedded engine's supervisor as a small
//     program, for libcontainer.WithSupervisorBinary.
package examples
