// Package docker is berth's backend on the Docker Engine: it runs berth's
// containers through a dockerd's Engine API (github.com/moby/moby/client,
// with API version negotiation; Docker 20.10's API 1.41 and later).
//
//	engine, err := docker.Open(docker.WithHost("unix:///run/docker.sock"))
//	store, err := image.Open("/var/lib/berth/images")
//	rt, err := runtime.New(engine, runtime.WithStateDir("/var/lib/berth"), runtime.WithImageStore(store))
//	c, err := rt.Create(ctx, "web-1", &runtime.Config{
//		Spec: runtime.DefaultSpec("", "/bin/echo", "hi"), Image: "busybox:latest"})
//
// The backend calls two dozen Engine API operations, declared as a
// small interface of its own (engine.go) so that unit tests run against a
// fake; the conformance suite runs against real daemons.
//
// # Record and scope
//
// Berth keeps no state of its own for a Docker container: the Docker name
// is the berth ID, and labels carry the rest (org.berthrun.berth=1, the ID,
// the runtime's scope, and the spec and caller's labels as JSON). Docker
// keeps them across restarts of berth and of the daemon, so Wait, List and
// every operation work from any process, at any time. Containers without
// these labels, or of another scope (WithScope), are neither listed nor
// touched; creating a container whose name another one holds is
// already-exists. Docker names need two characters: a one-character ID is
// invalid-argument.
//
// # Capabilities
//
// Exec, Pause, Update, Stats: yes. Logs: unless the daemon's log driver is
// "none" (Docker keeps output in its log whether or not writers were given;
// Logs reads all of it). On the json-file and local drivers berth caps each
// container's log with the request's driver.LogLimits, as the max-size and
// max-file log options; other drivers keep the daemon's configuration.
// CgroupNamespace: with API 1.41. UserNamespace and
// UserNamespaceShared: on a userns-remap daemon only (its security options
// name userns). RawBlock: yes; the runtime's volume policy keeps raw
// devices to user-namespaced containers, so on a plain daemon they are
// refused with failed-precondition, and on a userns-remap daemon the node
// berth made is handed to the daemon's root and bound into the container
// with a devices cgroup rule (Docker's --device would bind the host node of
// the container's path in a user namespace). HotAttach: when the daemon is
// on this host (see below). Snapshot (and so runtime's Commit): the
// container's root filesystem as Docker exports it, the container paused
// while the daemon writes it (see Runtime.Snapshot). Events: the
// daemon's own event stream (see Runtime.Events): whoever acts on a
// container of the scope, its subscribers hear of it. Terminal and
// Attach: yes (see Terminals and attachments below). DiskResize,
// RootDisk: no (not-implemented).
//
// # Hot attach
//
// Docker cannot add a mount to a running container; berth reaches the
// container's mount namespace through its init's pid and does what the
// embedded engine does (internal/mountns): the volume's mount is made
// detached on the host (ID-mapped through the container's user namespace
// on a userns-remap daemon; a tmpfs owned by the container's root), moved
// to its destination by a thread that entered the namespace, resolved in
// the container's root without following what the tenant planted
// (failed-precondition), and recorded by mount ID under the state
// directory, so that a detach takes out that mount wherever the tenant
// moved it. A raw device's node is bound the same way and allowed by
// writing the container's cgroup v1 devices.allow (devices.deny at detach);
// on a cgroup v2 host device attach is not-implemented. A created,
// never-started container has no namespace yet: attach is
// failed-precondition until Start. A volume given at create, mounted by
// runc while the tenant may already run, is detached by its destination.
//
// # User namespaces
//
// Docker's userns-remap maps every container of a daemon onto one range.
// On such a daemon a container asking for a user namespace gets the
// daemon's: the runtime's pool block cannot be honoured, and the spec
// kept (Info) holds the mapping in force instead, the same for every
// container (UserNamespaceShared). A container asking for none runs in the
// host's user namespace, as its spec says (UsernsMode "host"). On a plain
// daemon a user namespace is not-implemented. Bind mounts the spec asks to
// be ID-mapped ("idmap", berth's volumes in a user namespace) are mounted
// ID-mapped with the daemon's mapping by berth on the host, under the state
// directory (WithStateDir, default /run/berth/docker), and bound into the
// container from there: Docker cannot ID-map a bind itself.
//
// # From OCI spec to Docker
//
// What Docker can express is translated; what it cannot is refused with
// not-implemented (or invalid-argument when the request is wrong), never
// dropped. A create warning from the daemon (a setting the kernel cannot
// apply) is refused the same way, and the container removed.
//
//	process.args             Entrypoint = args[0], Cmd = args[1:] (the image's are replaced)
//	process.env, cwd         Env (Docker adds HOSTNAME, and image variables the spec lacks), WorkingDir ("/" if empty)
//	process.user             User "UID:GID", GroupAdd; umask, username: not-implemented
//	process.capabilities     CapDrop ALL + CapAdd the set; bounding, effective and permitted
//	                         must be equal (Docker has one set); ambient, inheritable: not-implemented
//	process.rlimits          Ulimits (RLIMIT_AS: not-implemented, Docker refuses it)
//	process.noNewPrivileges  SecurityOpt no-new-privileges:true|false (always explicit)
//	process.apparmorProfile  SecurityOpt apparmor=PROFILE
//	process.oomScoreAdj      OomScoreAdj
//	process.terminal         Tty: see Terminals and attachments below
//	process.consoleSize      HostConfig.ConsoleSize (applied by daemons of API 1.42 and later),
//	                         and a resize as Start returns; without terminal: invalid-argument
//	process.scheduler, selinuxLabel, ioPriority, execCPUAffinity: not-implemented
//	hostname, domainname     Hostname, Domainname
//	root.path                not-implemented (images only, for now); root.readonly: ReadonlyRootfs
//	image                    Config.Image: see Images below
//	namespaces               own (Docker's default) when listed, the host's when absent:
//	                         network: NetworkMode none with networking disabled (a new
//	                         namespace, loopback only) or host; pid, ipc, uts, cgroup:
//	                         private or host; mount is required; user: see above;
//	                         time, or any namespace path: not-implemented
//	mounts                   /proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, /sys,
//	                         /sys/fs/cgroup must be there with Docker's options (Docker
//	                         mounts them anyway; /dev/shm's size becomes ShmSize, devpts
//	                         gets gid=5); bind: Mounts (bind/rbind, ro, rro as ro over
//	                         berth's mount read-only all the way down, propagation;
//	                         nosuid, nodev, noexec only if the source's mount has them,
//	                         as a bind inherits them); tmpfs: Tmpfs; others: not-implemented
//	linux.resources          memory limit (swap unlimited unless given, not Docker's 2x),
//	                         reservation, swap, swappiness, OOM killer; CPU shares, quota,
//	                         period, realtime, cpus, mems; pids; block I/O weight; device
//	                         rules: a leading deny-all then allow rules (DeviceCgroupRules);
//	                         kernel memory, burst, idle, hugepages, network, RDMA, unified,
//	                         per-device block I/O: not-implemented
//	linux.devices            Devices: the host's node of the same type and numbers (found
//	                         through /sys/dev), with the access the spec's rules grant;
//	                         owner and mode are the host node's
//	linux.maskedPaths,       MaskedPaths, ReadonlyPaths as given; absent (nil): Docker's
//	linux.readonlyPaths      defaults
//	linux.seccomp            SecurityOpt seccomp=JSON (Docker's format is a superset of
//	                         OCI's); absent: Docker's default profile (berth does not
//	                         relax the daemon's confinement by omission); flags, listener:
//	                         not-implemented; {"defaultAction": "SCMP_ACT_ALLOW"} and
//	                         nothing else (driver.UnfilteredSeccomp, only under
//	                         AllowUnfilteredSeccomp): seccomp=unconfined, no filter
//	linux.sysctl             Sysctls
//	hooks, annotations, cgroupsPath, rootfsPropagation, mountLabel, intelRdt,
//	personality, memoryPolicy, netDevices, timeOffsets: not-implemented
//
// Docker also gives every container /etc/hostname, /etc/hosts and
// /etc/resolv.conf, and berth sets Init false (the command is PID 1) and
// the restart policy "no".
//
// # Images
//
// With an image store (runtime.WithImageStore), Config.Image is resolved
// there: berth writes the image as an untagged docker-save archive and
// loads it (only if the daemon lacks that image ID), so a load can move no
// daemon tag, and labels the container with the image ID
// (org.berthrun.berth.store-image). When such a container is deleted, the
// image is removed from the daemon unless it is tagged or another
// container, berth's or not, uses it: the daemon's refusal to remove an
// image in use is the arbiter, and a create that finds the image gone
// between its load and the create loads it again. Without a store,
// Config.Image is failed-precondition unless the backend was opened with
// WithDaemonImages, the explicit policy to run images the daemon already
// has (no pulls), which never went through berth's import limits nor its
// tag confinement; those images are never removed by berth.
//
// # Exit status
//
// Docker reports an exit code only: 128+N is read as death by signal N, as
// a shell reads $?, so a process that exits 137 by itself looks killed by
// SIGKILL. OOMKilled is Docker's (its State.OOMKilled; in events, the
// "oom" event before the exit).
//
// # IO
//
// With writers in the request, the container is attached before it starts
// and its stdout and stderr are copied (demultiplexed) by the creating
// process for as long as it lives; Wait in that process returns once the
// output is copied. A reader becomes the container's stdin (closed when
// the reader ends). Docker keeps the output in its log all the same.
// Docker carries stdout and stderr apart: their relative order is not
// kept, even when both go to one writer. The writers are called from one
// goroutine, one write at a time; how an attachment treats a slow one is
// below.
//
// # Terminals and attachments
//
// A terminal is Docker's Tty: the init's (Spec.Process.Terminal) or an
// exec'd process's (ProcessSpec.Terminal). Its output, stdout and stderr
// alike, comes to IO.Stdout and to the log as stdout, not multiplexed; Logs
// and FollowLogs read it as it is. A reader given with it is typed into
// the terminal, and its end is not passed on (Docker would end the output
// instead): type ^D for an end of input.
//
// The first size, Spec.Process.ConsoleSize or ProcessSpec.ConsoleSize, is
// sent at create; daemons of API 1.42 and later set it before the process
// starts. Docker 20.10 (API 1.41) ignores it: berth resizes the terminal
// as soon as the daemon lets it, before Start (Exec) returns, but the
// process runs for a moment with a terminal of no size (0x0): one that
// reads its size at once (stty size as its first command) may see none. A
// created container's terminal cannot be resized (failed-precondition):
// Docker resizes a running one only. Process.Resize is failed-precondition
// for a process without a terminal, or that exited.
//
// Attach is Docker's attach, from any process: stdout and stderr always
// (the end of the output tells the attachment that the init exited), stdin
// when given. A reader needs the container created with OpenStdin
// (recorded in berth's label; Docker's own OpenStdin also serves a stdin
// given at create): failed-precondition otherwise, where Docker would drop
// the input silently. Docker refuses to attach to a paused container
// (failed-precondition). The end of an attachment's input closes the
// init's stdin with StdinOnce and no terminal only, as in Docker and the
// CRI: with a terminal the daemon never closes it (type ^D), and without
// StdinOnce the input's end is not passed on, so that the attachment
// keeps its output. A detach (Attach's ctx ends) closes the connection:
// an end of its input too, closing the init's stdin with StdinOnce and no
// terminal. The daemon never ends an attach it registered after the
// container exited: an attachment ends exitGrace (2s) after the exit if
// the daemon has not ended it. The init's output ends at its exit on
// Docker, not when it closes its stdout and stderr.
//
// Docker's attach stops the container's output, its log and every other
// attachment once a client that does not read is a megabyte behind. Each
// attachment of berth's (at create, Attach, Exec) reads its connection
// into a bounded backlog (1 MiB) emptied by one goroutine into the
// caller's writers; with the backlog full it reads on as the writers take
// their output, and an attachment whose write blocks for writerStall (5s)
// or fails is dropped: Attach returns resource-exhausted, or the writer's
// error. A writer blocked for ever thus holds the container for 5s at
// most; a slow one paces it, as a pipe would. Attach returns nil at the
// output's end, ctx's error on a detach. A canceled Attach closes the
// connection at once and returns, leaving nothing behind but, for a write
// into the caller's writer in progress, that write (waited for 5s at
// most; no write begins after Attach returned), and a read of the
// caller's reader in progress, which ends the copy of the input when it
// returns.
//
// # Signals and paused containers
//
// Docker resumes a paused container to deliver any signal but SIGKILL: Kill
// refuses those with failed-precondition. The Engine API cannot signal an
// exec'd process; Process.Signal signals its host pid (through a pidfd,
// after checking it still runs), which needs the daemon on this host (a
// unix socket); otherwise it is not-implemented.
//
// A container's init may end its main thread alone and run on in its
// other threads. runc then takes it for stopped: Docker's kill fails
// quietly, Docker waits out the stop timeout, marks the container exited
// (255) while the tenant runs on, and never deletes containerd's task,
// whose shim would live on for good. With the daemon on this host, Kill
// sends signals other than SIGKILL to the init's pid through a pidfd
// (checked to be in the container's cgroup), which reaches the whole
// thread group; with SIGKILL, Docker's kill goes on while berth kills
// whatever the container's cgroup holds once the init's leader is a
// zombie. Either way Docker sees the init's real exit. Delete kills what
// is left in the cgroup too.
//
// # Daemon restarts
//
// Run dockerd with --live-restore (scripts/setup-docker.sh does): containers
// keep running while it restarts. Berth loses nothing either way (its
// record is Docker's), and a Wait in progress reconnects for up to two
// minutes.
//
// # Native access
//
// Runtime.As accepts **Runtime and **client.Client (the Engine API client);
// runtime.Container.As accepts nothing (the backend has no per-container
// types). Of the optional driver interfaces the backend implements Execer,
// Pauser, Updater, StatsReader, Logger, LogFollower, Snapshotter,
// EventSource, Attacher and (on Linux) VolumeAttacher: root disks, disk resizing and cold moves are
// not-implemented, answered by the runtime.
package docker
