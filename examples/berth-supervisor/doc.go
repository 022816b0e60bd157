// Command berth-supervisor is the embedded engine's supervisor as a small
// program of its own. A program using berth's libcontainer backend ships it
// beside itself and names it with libcontainer.WithSupervisorBinary: the
// supervisors then run this binary instead of re-executing the program,
// and so do the containers' inits they start. It links the backend and
// little else, so each supervised container starts sooner and each
// supervisor costs less memory than a re-exec of a large program.
//
// Build it from the same berth as the program that names it:
//
//	go build -tags seccomp -o /usr/local/libexec/berth/berth-supervisor \
//		github.com/berthrun/berth/examples/berth-supervisor
//
// It is not run by hand: the backend starts it as "berth-supervisor
// berth-supervisor ROOT N SHARE", and libcontainer as "berth-supervisor
// init" for a container's init.
package main
