// Package libcontainer is berth's embedded engine and its default: runc's
// libcontainer run inside the calling program, with no daemon.
//
// # The one call in main
//
// libcontainer starts a container's init by re-executing the calling
// binary, and berth keeps its supervisors the same way. A
// program using this backend must call Init first thing in main (and in
// TestMain for tests):
//
//	func main() {
//		libcontainer.Init() // returns at once unless this process is a re-exec
//		...
//	}
//
// Importing this package also links runc's nsenter (the C constructor that
// joins namespaces before the Go runtime starts) and the cgroup devices
// controller; both are imported here, once, and nowhere else. And it locks
// the main goroutine to the main thread (runtime.LockOSThread in init):
// libcontainer enters container namespaces on threads it has Go throw
// away, and Go cannot throw away the main thread, so a container's mount
// namespace (and the volumes mounted in it) would otherwise be kept for
// the life of the process whenever that work landed there.
//
// # State and restarts
//
// Everything lives under the root directory given to Open (default
// /var/lib/berth): containers/<id>/ holds berth's record of the container
// (its spec, labels, exit status, log and the mount point of an ID-mapped
// root filesystem), runc/<id>/ holds libcontainer's state. A new Open on the
// same root, in this or any later process, lists and controls the
// containers that an earlier process created. What a process read of these
// files it keeps while they stay as they were (see load.go): a state file
// holds the whole spec, seccomp profile included, and parsing it on every
// call cost a container's run more than its profile did.
//
// An init whose main thread ended alone while its other threads run on (a
// tenant's process can do that) is a zombie to runc, which takes the
// container for stopped and refuses to signal it. Berth reports it
// running while that thread group lives (the init libcontainer recorded,
// same start time), and Kill signals the group through a pidfd: Stop and
// Wait end when the tenant's threads do, with their real exit.
//
// # Supervisors
//
// Each container's init is the child of a supervisor: a re-exec of the
// calling binary, in its own session, that keeps the containers of one
// state root that no caller keeps, like containerd's shim but one for
// many containers rather than one each. The first create starts it; it
// quits 2 s after its last container ended and no client is connected.
// Its job for a container is the container's monitor: it records the
// init's exit status under containers/<id>/, so Wait works from any
// process, and the caller may exit while the container runs. The status
// says whether the kernel's OOM killer killed a process of the container
// (its memory cgroup's count, read once the init has exited). While the
// job is under way the supervisor holds a lock on
// containers/<id>/monitor.lock, which is how other processes know it
// lives; Wait asks the supervisor to answer once the job is over, so no
// waiter polls or holds a thread.
//
// A container costs its supervisor a few goroutines parked on the Go
// runtime's poller (the init's exit is watched through a pidfd, not a
// thread blocked in wait4) and six descriptors for a container without
// a terminal, CRI log or standard input (ten at most, what a supervisor
// counts), not a process and its threads: the kernel's pid_max counts
// only the containers' own tasks. A supervisor takes as many containers
// as its descriptor limit allows at ten each; the next one, supervisor/<n+1>/, takes
// the rest. They live under supervisor/: supervisor/<n>/lock is held
// while supervisor n lives, supervisor/<n>/sock (root's alone) is where
// it is asked, supervisor/<n>/log has what it says.
//
// A supervisor is a re-exec of the calling binary unless the caller names
// another with WithSupervisorBinary: examples/berth-supervisor, a small
// program built from the same berth that links this backend alone.
// libcontainer starts each container's init as a re-exec of the binary of
// whoever creates it, so with a small supervisor every supervised init
// starts from the small binary too: its Go runtime and package
// initialization are the biggest part of an init's start. berthctl and
// berth-cri use a berth-supervisor lying beside them.
//
// A supervisor killed (kill -9) leaves its containers running, listed and
// controllable (signals, Wait, delete): Wait then follows each init to
// its end, but its exit code is lost (-1), as with a killed containerd
// shim; the next create starts a new supervisor. What the supervisor held
// goes with it, as with a shim: the read ends of the init's output pipes
// (its next write fails, with SIGPIPE unless it ignores it), a terminal's
// master (the terminal hangs up), the control socket (attach, resize and
// reopen of the CRI log).
//
// The init's stdout and stderr are pipes (a pipe each, but one for both
// when the caller gave one writer for both, which keeps the order of
// their writes) that the supervisor copies into the container's log,
// containers/<id>/container.log, capped with rotation
// (driver.CreateRequest.Log: container.log.1... hold the older output), to
// attachments, and on to the caller's writers when there are any: the log
// is kept for every container, and however fast a container writes it
// never grows past its cap. A caller's writer that breaks ends the copy of
// its stream, so the container sees the broken pipe. Wait returns once the
// output is copied; FollowLogs reads the log as it grows, across
// rotations.
//
// With the Attached option the calling process plays the supervisor's part
// itself, with no request to a supervisor (what `berthctl run` uses), but
// if the caller dies first its containers live on as orphans whose exit
// codes are unknown (-1), as with `runc run`.
//
// # CRI log files
//
// A container created with a CRI log (driver.CreateRequest.CRILog, from
// runtime.Config.CRILog) has its output written to that host file in the
// Kubernetes CRI log format (package internal/crilog) by the same process
// that copies it into the kept log: its supervisor, which goes on writing
// while the program that created the container is down (a CRI server
// restarting), or, with Attached, the calling process, after whose death
// nobody does. Each stream then has a pipe of its own. ReopenCRILog, from
// any process on the root, asks that process over the container's control
// socket (below) and returns once it answered that the new file is open,
// or with its error; a socket nobody listens on (the supervisor or owner is
// gone, the output is copied to its end) is failed-precondition. Failures
// to write the file go to the monitor's log (containers/<id>/monitor.log),
// or the caller's stderr when Attached, once per run of failures.
//
// # The control socket
//
// Whoever copies a container's output (the supervisor, or the caller when
// Attached) serves the container's control socket until the output is
// copied to its end: containers/<id>/control/sock, mode 0600 in a
// directory of mode 0700 (the container's directory itself must stay 0711,
// see User namespaces), root's alone and in no container's view, reached
// through a descriptor of the directory, so the state root's depth does
// not matter. A client sends one request, a line of JSON of at most 4 KiB
// within 10 s, and gets a line of JSON back: {} or the error and its class.
// The requests are reopen (the CRI log), resize (the init's terminal) and
// attach: after its answer, the client gets frames of the output (8 bytes
// of header, kind and length, as Docker's multiplexed streams) of the
// streams it asked for, pings when the output is idle, and an end frame
// once the output has ended and was copied; it sends frames of input, then
// an end-of-input frame; closing the connection detaches it. No client can
// block or break the process: the output reaches each attachment through a
// queue of its own (logfile.Fanout), and an attachment 1 MiB behind, or
// that does not take a frame within 10 s, is dropped; one goroutine writes
// into the init's standard input, so an init that never reads holds a
// chunk there, never an attachment; at most 64 connections are served at
// once (others are refused, resource-exhausted). Once the init has exited
// and its output was copied, Wait returns, and then the attachments have 10
// s more to take the end of the output before its job ends.
//
// # Terminals and attachments
//
// An init with a terminal (Spec.Process.Terminal) gets a pseudo-terminal
// that runc's init allocates inside the container, from the container's
// own devpts instance, and makes its controlling terminal and standard
// streams; the master comes back over libcontainer's console socket to the
// process that copies the output, which copies what the terminal says into
// the log, the CRI log (as stdout), the caller's IO.Stdout and the
// attachments, types the caller's IO.Stdin (or the attachments' input,
// with OpenStdin) into it, and sets its size (ConsoleSize, then Resize).
// A caller's writer that fails is dropped and the copy goes on: a terminal
// has no broken pipe to give its process, which would otherwise block on a
// full terminal. The end of the output is the read error EIO, once every descriptor of
// the terminal in the container is closed; the master itself stays open
// until the init exits (closing it would hang the terminal up and send
// SIGHUP to its processes). A terminal has no end of input: the end of
// IO.Stdin, or of an attachment's input under StdinOnce, closes nothing,
// as with Docker and containerd. An exec with a terminal is the same
// without a supervisor: the caller holds the master, Process.Resize sets its
// size, and Wait returns once the process exited and its output was copied
// (a process left holding the terminal is cut off after 2 s of silence).
//
// Attach (driver.Attacher) works from any process on the root: a
// container whose output nobody copies any more returns at once. It
// returns nil once the output ended and was copied to the writers, ctx's
// error when ctx ends first (a detach; no write to the writers begins
// after it returned, and a Read of IO.Stdin under way then is left to
// return on its own, what it read dropped), or an error when a writer
// fails or the attachment was dropped (aborted). With OpenStdin the
// process holds the write end of the init's standard input and feeds it
// from the attachments; StdinOnce closes it when the first attachment's
// input ends or it detaches.
//
// # Images
//
// A container made from an image of berth's store (runtime.WithImageStore)
// runs on an overlay: the image's unpacked tree, shared and never written,
// under a writable layer of its own in containers/<id>/rw; nothing is
// copied. See image.go for the user namespace case.
//
// # Binds
//
// runc's init mounts every bind of the spec (berth's mounts of the
// sources, from the runtime's volume manager) before it waits on its exec
// FIFO, and a container never starts twice: the engine declares
// driver.Capabilities.BindsAtCreate, and the runtime takes its mounts of
// the sources off the host once Create returns. runc applies a bind's
// propagation option to its bind; with a shared one (rshared) and no root
// filesystem propagation in the spec, the container's is rshared, as
// containerd and dockerd set it: under runc's default (rslave) the bind
// would only receive the host's mounts, never give its own back. runc
// keeps the root filesystem's own mount private either way.
//
// # User namespaces
//
// When the spec holds a user namespace (allocated by package runtime), the
// root filesystem is presented to the container through an ID-mapped bind
// mount at containers/<id>/rootfs: files owned by host root appear owned by
// the container's mapped root, so root in the container can write them,
// without a copy or a chown of the tree (O(1), the source is left
// unchanged). This needs a filesystem that supports ID-mapped mounts (ext4,
// xfs, btrfs, tmpfs); others are refused with not-implemented. The state
// directory must be searchable by others down to the root filesystem (the
// container's root is no host user), or the create is failed-precondition.
//
// # Shared namespaces
//
// A container that joins another's namespaces (driver.CreateRequest.Join,
// runtime.Config.Join) joins those of the other's init, created or
// running: a created container's init is a process already, waiting on
// its exec FIFO, and its pid is in Info. The init's /proc directory is
// opened and checked against its start time (a process that took its pid
// after it exited is never reached: the descriptor fails every lookup
// once the init is gone), each namespace is opened through it and checked
// against the inode recorded in containers/<id>/namespaces.json when the
// init was created (an init that moved since is not followed), and the new
// init joins these very descriptors, which this process holds until the
// init has joined them (libcontainer is handed /proc/<this pid>/fd/<fd>).
// A joined user namespace must map IDs as the spec says (the other's
// mappings, which the root filesystem and volumes are ID-mapped with).
// OpenNamespace (driver.NamespaceOpener) opens namespaces the same way.
//
// # Volumes in a running container
//
// Hot attach moves a mount prepared on the host (open_tree, fsmount) into
// the container's mount namespace, on a thread thrown away afterwards; the
// destination is resolved inside the container's root, never through a
// link out of it nor a magic link, opened O_PATH (a FIFO planted there
// cannot block it) and type-checked. Every volume's mount is known by its
// mount ID, recorded at create (before the container's process runs) and
// at hot attach (containers/<id>/mounts.json): a detach unmounts that
// mount wherever the tenant moved it, never whatever lies at the path,
// and a device's rule leaves the devices cgroup whatever became of its
// mount.
//
// # Seccomp
//
// The engine applies the seccomp profile the portable layer puts in the
// spec (Docker's default unless the caller gives one). That needs
// libseccomp through cgo: build with -tags seccomp. A binary built without
// it refuses to create a container that has a profile (failed-precondition)
// rather than run it unconfined. A profile that allows everything and says
// nothing else (driver.UnfilteredSeccomp, which the portable layer passes
// only under its AllowUnfilteredSeccomp switch) means no filter at all: the
// container's processes, exec'd ones too, run without one (Seccomp: 0 in
// /proc/self/status), whatever the build.
//
// # Native access
//
// Runtime.As accepts **Runtime (this backend's own type); runtime.Container.As
// accepts nothing (the backend has no per-container types). Of the
// optional driver interfaces (CRILogReopener, NamespaceOpener and Attacher
// included) the backend implements every one but
// DiskResizer, DiskMaker and EventSource: its containers have no root disk
// of their own, so disk resizing and cold moves are not-implemented,
// answered by the runtime; and the engine has no event stream of its own,
// so the runtime watches the containers for runtime.Runtime.Events (its
// own actions, the exits Wait reports, listings for what other processes
// do).
package libcontainer
