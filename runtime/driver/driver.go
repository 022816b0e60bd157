package driver

import (
	"context"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Status is the lifecycle state of a container.
type Status string

// The states a container moves through.
const (
	StatusCreated Status = "created"
	StatusRunning Status = "running"
	StatusPaused  Status = "paused"
	StatusStopped Status = "stopped"
	// StatusUnknown is reported for a container whose engine state cannot
	// be read (for example a create interrupted by a crash).
	StatusUnknown Status = "unknown"
)

// Capabilities lists what a backend can do beyond the mandatory lifecycle
// (create, start, wait, kill, delete, state, list). The conformance suite
// gates its tests on these fields, never on a backend's name.
type Capabilities struct {
	Exec          bool // extra processes in a running container
	Pause         bool // freeze and thaw
	Update        bool // live change of memory, CPU and pids limits
	Stats         bool // memory, CPU and pids usage
	Logs          bool // stdout/stderr kept in a capped log (CreateRequest.Log), with or without writers, and readable
	UserNamespace bool // a private user namespace per container
	// UserNamespaceShared is true when every user-namespaced container
	// gets the engine's one ID mapping (Docker's userns-remap) instead of
	// its own block from the runtime's pool; Info reports the mapping in
	// force.
	UserNamespaceShared bool
	RawBlock            bool // block device nodes exposed into the container
	HotAttach           bool // volumes attached to and detached from a running container
	RootDisk            bool // each container's root filesystem is a disk of its own (the backend is a DiskMaker)
	DiskResize          bool // the container's root disk can grow while it runs
	Snapshot            bool // consistent archive of the root filesystem while running
	// CgroupNamespace is true when a container sees its own cgroup at
	// /sys/fs/cgroup, so that its limits can be read from inside.
	CgroupNamespace bool
	// Events is true when the engine reports its containers' events
	// itself, whoever acted on them (the backend is an EventSource).
	// Without it the runtime observes them on its own: runtime.Events
	// works on every backend, this says who watches.
	Events bool
	// CRILog is true when the backend also writes a container's output
	// to a host file in the Kubernetes CRI log format
	// (CreateRequest.CRILog), from whatever process copies the output,
	// so that it goes on while the caller is gone, and reopens the file
	// when asked (the backend is a CRILogReopener).
	CRILog bool
	// JoinNamespaces is true when a container can share the network,
	// IPC, UTS, PID and user namespaces of another container of the
	// backend, created or running (CreateRequest.Join).
	JoinNamespaces bool
	// NamespaceFiles is true when the backend opens the namespaces of a
	// created or running container for the runtime (it is a
	// NamespaceOpener): its containers' inits are processes of this host.
	NamespaceFiles bool
	// BindsAtCreate is true when the engine mounts a container's bind
	// mounts (and hot-attached volumes) into the container's own mount
	// namespace as Create (AttachVolume) returns, and never reads their
	// sources again: no start or restart binds them anew. The runtime
	// then takes its own mounts of bind sources off the host (see
	// volume.Manager.ReleaseHostBinds).
	BindsAtCreate bool
	// Terminal is true when a process can have a pseudo-terminal: the
	// init (Spec.Process.Terminal, with Spec.Process.ConsoleSize as its
	// first size) and extra processes (ProcessSpec.Terminal), each
	// resizable while it runs (Attacher.ResizeTerminal, Process.Resize).
	Terminal bool
	// Attach is true when the streams of a created or running
	// container's init can be joined after its creation, from any
	// process (the backend is an Attacher), and its standard input kept
	// open for that (CreateRequest.OpenStdin).
	Attach bool
}

// IO is where a process's standard streams go. A nil reader or writer means
// the stream is not connected (a container's output is kept in its log
// besides, see Capabilities.Logs).
type IO struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// CreateRequest is a container creation after the portable layer checked it.
type CreateRequest struct {
	ID string
	// Spec is a complete OCI runtime spec. Root.Path is an absolute
	// directory, or empty when Image is set. When the container asked for a user namespace the spec
	// already holds the user namespace and its ID mappings, allocated by
	// the portable layer; the backend makes the root filesystem writable
	// for the mapped root.
	Spec *specs.Spec
	// Image is the reference of the image to run, or empty. A backend that
	// does not take images returns not-implemented.
	Image string
	// ImageSource is Image resolved in berth's image store, when the
	// runtime has one; nil otherwise (a backend with images of its own,
	// Docker's, may then look Image up itself).
	ImageSource *ImageSource
	// RootDiskImage, on backends with Capabilities.RootDisk, is the
	// container's root disk: an image file the runtime owns (made by the
	// backend's MakeDisk, or adopted), attached through the runtime's
	// volume manager under its policy and mounted at Spec.Root.Path. The
	// backend keeps the path to grow the file in place (ResizeDisk) and to
	// copy it (DiskMaker.SnapshotDisk); it never mounts, detaches or
	// removes it. Image and ImageSource are then empty: the disk holds the
	// image's tree.
	RootDiskImage string
	// Devices are raw block devices to expose (volumes in raw-block
	// mode), already checked by the volume policy. Host-mounted volumes
	// arrive as bind mounts in Spec.Mounts.
	Devices []Device
	// Labels are kept with the container and returned by State.
	Labels map[string]string
	// IO for the container's init process. Its output also goes to the
	// backend's log (see Runtime.Logs), capped by Log.
	IO IO
	// Log caps the kept output; the portable layer fills in its
	// defaults, so both fields are set.
	Log LogLimits
	// OpenStdin keeps the init's standard input open for whoever
	// attaches to it (Attacher.Attach), as Docker's --interactive does
	// for a detached container; IO.Stdin is then nil. Without it the
	// init's standard input is IO.Stdin, or nothing. StdinOnce closes it
	// when the first attachment's input ends (or it detaches), unless
	// the init has a terminal. Only on backends with Capabilities.Attach.
	OpenStdin, StdinOnce bool
	// CRILog, when set, is a host file the container's output also
	// goes to, in the Kubernetes CRI log format (see
	// runtime.Config.CRILog): an absolute, clean path whose directory
	// existed when the portable layer checked it. It reaches only
	// backends with Capabilities.CRILog.
	CRILog string
	// Join maps namespace types (network, ipc, uts, pid, user) to the
	// container of this backend whose namespace of that type the new
	// container shares (runtime.Config.Join); only on backends with
	// Capabilities.JoinNamespaces. The runtime checked each container: it
	// exists, its init lives, the security policy admits what it holds,
	// and it is not deleted before the new container is. Spec lists each
	// type among its namespaces, without a path; for a joined user
	// namespace Spec holds that container's ID mappings, which the
	// backend applies to the root filesystem and volumes as for a user
	// namespace of the container's own. The backend joins the namespaces
	// that container's init was created with, and fails with
	// failed-precondition rather than join any other: a process that took
	// the init's pid after it exited, or a namespace the init moved to.
	Join map[specs.LinuxNamespaceType]string
}

// LogLimits cap a container's kept output as Docker's max-size and
// max-file log options do: at most MaxFiles files (the current one and
// MaxFiles-1 rotated ones) of at most MaxSize bytes each. A container
// writing faster than anything reads never makes its log larger.
type LogLimits struct {
	MaxSize  int64
	MaxFiles int
}

// ImageSource is an image of berth's store, already imported with its limits
// and tag policy, offered in the forms backends take.
type ImageSource struct {
	// Digest is the image's manifest digest; ConfigDigest its config's
	// (Docker's image ID).
	Digest, ConfigDigest string
	// Rootfs returns the image's unpacked tree, shared and read-only,
	// held for the container until the container is deleted.
	Rootfs func(ctx context.Context) (string, error)
	// WriteArchive writes the image as an untagged docker-save archive,
	// so that loading it into an engine can move no tag there.
	WriteArchive func(ctx context.Context, w io.Writer) error
}

// Device is a block device node berth made for one container: the backend
// exposes HostPath at Path and allows it in the devices cgroup. The node is
// owned by the container's root.
type Device struct {
	HostPath     string
	Path         string
	Major, Minor uint32
	ReadOnly     bool
}

// Attachment is a volume attached to a running container: a mount (a bind
// of a host mount or directory, or a tmpfs) or a device.
type Attachment struct {
	Mount  *specs.Mount
	Device *Device
}

// ExitStatus is how a process ended.
type ExitStatus struct {
	// Code is the exit code; for a process killed by a signal it is
	// 128+signal, as a shell reports it.
	Code int
	// Signal is the signal that killed the process, or 0.
	Signal syscall.Signal
	// ExitedAt is when the exit was observed.
	ExitedAt time.Time
	// OOMKilled is true when the kernel's OOM killer killed a process of
	// the container (its init or another) while it ran, as far as the
	// backend can tell.
	OOMKilled bool
}

// Info describes one container.
type Info struct {
	ID     string
	Status Status
	// Pid is the init's pid on the host while it lives: for a running
	// or paused container, and for a created one on engines whose created
	// containers have an init already (the embedded engine's waits to be
	// started); 0 otherwise.
	Pid       int
	CreatedAt time.Time
	Labels    map[string]string
	// Spec is the spec the container was created with. A backend may
	// share it among the Infos it hands out (it keeps what it read): the
	// portable layer copies it before a caller can change it.
	Spec *specs.Spec
	// Exit is set once the container has stopped and its exit is known.
	Exit *ExitStatus
}

// EventType is what happened to a container.
type EventType string

// The events of a container's life.
const (
	EventCreated EventType = "created"
	EventStarted EventType = "started"
	EventPaused  EventType = "paused"
	EventResumed EventType = "resumed"
	// EventStopped is the end of the container's init, whoever caused it.
	EventStopped EventType = "stopped"
	EventDeleted EventType = "deleted"
)

// Event is a change in one container's life.
type Event struct {
	Type EventType
	ID   string
	// Time is when the change happened, or when it was observed.
	Time time.Time
	// Status is the container's state after the event, empty after
	// EventDeleted. A backend leaves it empty: the runtime sets it from
	// Type.
	Status Status
	// Exit is how the init ended, for EventStopped when it is known.
	Exit *ExitStatus
}

// Resources are the limits that can change while a container runs. A nil
// field is left unchanged.
type Resources struct {
	MemoryLimit *int64  // bytes
	CPUShares   *uint64 // relative weight
	CPUQuota    *int64  // microseconds per CPUPeriod; -1 for no limit
	CPUPeriod   *uint64 // microseconds
	PidsLimit   *int64  // -1 for no limit
}

// Stats is a point-in-time reading of a container's usage. What follows
// Time is what an engine reads beyond the basics (the counters cAdvisor
// and the kubelet's CRI metrics name): a zero field, or a nil one, is
// one the backend does not read, or that the host does not count.
type Stats struct {
	MemoryUsage   uint64 // bytes
	MemoryLimit   uint64 // bytes; 0 when unlimited
	CPUUsageNanos uint64 // total CPU time consumed
	Pids          uint64
	PidsLimit     uint64 // 0 when unlimited
	Time          time.Time

	CPU    CPUStats
	Memory MemoryStats
	// BlockIO is the I/O of the container's processes, a device each.
	BlockIO []BlockIOStats
	// Network are the interfaces of the container's network namespace,
	// which it may share (a pod's).
	Network []NetworkStats
	// Process counts what the container's processes hold.
	Process ProcessStats
	// Filesystem is the container's writable layer and the filesystem
	// that holds it; nil where the backend does not read it.
	Filesystem *FilesystemStats
}

// CPUStats split the container's CPU time, and count its throttling by a
// CPU quota.
type CPUStats struct {
	UserNanos, SystemNanos uint64
	// Periods are the quota's enforcement periods that elapsed while the
	// container ran, ThrottledPeriods those it was throttled in, for
	// ThrottledNanos in all.
	Periods, ThrottledPeriods, ThrottledNanos uint64
}

// MemoryStats detail the container's memory, in bytes unless said.
type MemoryStats struct {
	// WorkingSet is the usage less the inactive file cache, what the
	// kubelet evicts on.
	WorkingSet uint64
	MaxUsage   uint64 // the highest usage recorded (cgroup v1 only)
	RSS        uint64 // anonymous memory
	Cache      uint64 // page cache
	MappedFile uint64
	Swap       uint64
	Kernel     uint64
	// Failcnt counts the times the usage hit the limit (cgroup v1 only).
	Failcnt uint64
	// PageFaults and MajorPageFaults count faults, OOMKills the processes
	// the kernel's OOM killer killed.
	PageFaults, MajorPageFaults, OOMKills uint64
}

// BlockIOStats are the I/O a container did on one block device.
type BlockIOStats struct {
	Major, Minor          uint64
	ReadBytes, WriteBytes uint64
	Reads, Writes         uint64 // operations
}

// NetworkStats are an interface's counters.
type NetworkStats struct {
	Name                                    string
	RxBytes, RxPackets, RxErrors, RxDropped uint64
	TxBytes, TxPackets, TxErrors, TxDropped uint64
}

// ProcessStats count the threads, open file descriptors and sockets of
// the container's processes.
type ProcessStats struct {
	Threads, FileDescriptors, Sockets uint64
}

// FilesystemStats are a container's writable layer (what it wrote: bytes
// and inodes) and the filesystem it is on.
type FilesystemStats struct {
	UsedBytes, UsedInodes uint64
	// Capacity is the filesystem's size in bytes, Inodes and InodesFree
	// its inodes.
	Capacity, Inodes, InodesFree uint64
}

// ProcessSpec is an extra process run in a container.
type ProcessSpec struct {
	Args []string
	Env  []string
	Cwd  string
	// User inside the container; nil means the container's own user.
	User *specs.User
	// Terminal gives the process a pseudo-terminal as its standard
	// streams (Capabilities.Terminal): its output, stdout and stderr
	// alike, goes to IO.Stdout, and IO.Stdin is typed into it (the end
	// of IO.Stdin closes nothing: a terminal has no end of input).
	// ConsoleSize is its size at first; Process.Resize changes it.
	Terminal    bool
	ConsoleSize *specs.Box
}

// Process is a running extra process.
type Process interface {
	Pid() int
	// Wait returns once the process has exited and its output was copied;
	// output that a process it left behind keeps writing is copied while it
	// makes progress, and cut after 2 s of none, or 10 s after the exit in all
	// (Docker's daemon cuts it 2 s after the exit), so that a child holding the
	// output, or writing on, never holds up Wait.
	Wait(ctx context.Context) (ExitStatus, error)
	Signal(ctx context.Context, sig syscall.Signal) error
	// Resize sets the size of the process's terminal;
	// failed-precondition for a process without one.
	Resize(ctx context.Context, size specs.Box) error
}

// Runtime is the core every backend implements: the mandatory lifecycle.
// What only some engines can do is in the optional interfaces below
// (Execer, Pauser, ...), each matching a field of Capabilities: runtime.New
// finds them with type assertions, refuses a backend that claims a
// capability without implementing its interface (invalid-argument), and
// never calls an interface whose capability is false. The portable layer
// answers not-implemented itself for what a backend lacks, so a backend
// never needs a stub.
//
// IDs reaching a backend are valid and state transitions were checked by
// the caller, but a backend must still report engine refusals with the
// right class.
type Runtime interface {
	// Name names the backend ("libcontainer", "docker"...). A state
	// directory belongs to one backend: the portable layer records the
	// name there and refuses another.
	Name() string
	Capabilities() Capabilities

	Create(ctx context.Context, req *CreateRequest) error
	Start(ctx context.Context, id string) error
	// Wait blocks until the container's init exits. It works for containers
	// created by another process on the same root.
	Wait(ctx context.Context, id string) (ExitStatus, error)
	Kill(ctx context.Context, id string, sig syscall.Signal) error
	// Delete removes a stopped or created container and everything the
	// backend holds for it (cgroups, mounts, state). Forced deletion of a
	// running container is done by the portable layer with Kill and Wait.
	Delete(ctx context.Context, id string) error
	State(ctx context.Context, id string) (*Info, error)
	List(ctx context.Context) ([]*Info, error)

	// As reaches backend-native types (see the backend's documentation).
	As(i any) bool
	Close() error
}

// Execer runs extra processes in a running container (Capabilities.Exec).
type Execer interface {
	Exec(ctx context.Context, id string, p *ProcessSpec, io IO) (Process, error)
}

// Attacher joins the streams of a container's init after its creation
// (Capabilities.Attach), from any process.
type Attacher interface {
	// Attach connects pio to the init of created or running container
	// id: what the init writes from then on goes to pio.Stdout and
	// pio.Stderr (with a terminal, all of it to pio.Stdout), besides the
	// container's logs, and pio.Stdin is fed to the init's standard input,
	// which the container kept open for it (CreateRequest.OpenStdin;
	// failed-precondition when it did not). Several attachments may be
	// joined at once; each gets all the output. Attach returns nil once
	// the init's output has ended (the init exited, or closed its
	// output, and what it wrote was copied), or ctx's error once ctx
	// ended: the attachment is then dropped and the container goes on,
	// and no write to pio's writers begins after Attach returned. A
	// writer that fails or blocks for long is dropped, never holding up
	// the container or the other attachments; the end of pio.Stdin (or
	// a detach) closes the init's standard input only with StdinOnce,
	// and never a terminal's.
	Attach(ctx context.Context, id string, pio IO) error
	// ResizeTerminal sets the size of the init's terminal (the container
	// was created with Spec.Process.Terminal); failed-precondition
	// otherwise.
	ResizeTerminal(ctx context.Context, id string, size specs.Box) error
}

// Pauser freezes and thaws containers (Capabilities.Pause).
type Pauser interface {
	Pause(ctx context.Context, id string) error
	Resume(ctx context.Context, id string) error
}

// Updater changes limits while a container lives (Capabilities.Update).
type Updater interface {
	Update(ctx context.Context, id string, r *Resources) error
}

// StatsReader reads a container's usage (Capabilities.Stats).
type StatsReader interface {
	Stats(ctx context.Context, id string) (*Stats, error)
}

// Logger reads back the output kept for a container (Capabilities.Logs).
type Logger interface {
	// Logs returns the container's kept output.
	Logs(ctx context.Context, id string) (io.ReadCloser, error)
}

// LogFollower is what a backend whose kept output can be followed as it
// grows implements besides Logger (Container.WriteLogs with Follow).
type LogFollower interface {
	// FollowLogs writes the container's kept output to w, only its last
	// tail lines when tail >= 0, then what the container writes next,
	// until the container has stopped and its output is copied, or ctx
	// ends.
	FollowLogs(ctx context.Context, id string, tail int, w io.Writer) error
}

// CRILogReopener is what a backend that writes CRI log files implements
// (Capabilities.CRILog).
type CRILogReopener interface {
	// ReopenCRILog has whoever writes container id's CRI log close the
	// file and open its path again, creating a new file when the old one
	// was moved away, and returns once it has: what the container writes
	// from then on is in the file now at the path. A container without a
	// CRI log, or whose output nobody copies any more, is
	// failed-precondition.
	ReopenCRILog(ctx context.Context, id string) error
}

// VolumeAttacher attaches volumes to live containers
// (Capabilities.HotAttach).
type VolumeAttacher interface {
	// AttachVolume makes a volume appear in a created or running
	// container without a restart.
	AttachVolume(ctx context.Context, id string, a *Attachment) error
	// DetachVolume removes the volume at dst from the running container.
	DetachVolume(ctx context.Context, id string, dst string) error
}

// DiskResizer grows a container's root disk online
// (Capabilities.DiskResize).
type DiskResizer interface {
	// ResizeDisk grows the container's root disk to size bytes.
	ResizeDisk(ctx context.Context, id string, size int64) error
}

// Snapshotter archives a container's root filesystem at one instant
// (Capabilities.Snapshot). A backend with root disks does not need it: the
// runtime archives a DiskMaker.SnapshotDisk copy itself.
type Snapshotter interface {
	// Snapshot writes an uncompressed tar archive of the container's
	// root filesystem as it was at one instant, even while it runs.
	Snapshot(ctx context.Context, id string, w io.Writer) error
}

// EventSource is what a backend whose engine reports its containers'
// events implements (Capabilities.Events): Docker's event stream, say. A
// backend without it is watched by the runtime, which reports the actions
// it takes itself and waits for the exits of the running containers.
type EventSource interface {
	// Events watches the engine's events for the backend's containers,
	// whoever caused them (this process, another, the engine itself), and
	// passes each to send, one at a time, in the order they happened for
	// each container, until ctx ends or the engine fails. Every event that
	// happens after Events returns is passed once. An event has Type, ID
	// and Time, and Exit for EventStopped when the engine tells it. The
	// channel returned receives why the watch ended (ctx's error or the
	// engine's failure) and is closed once nothing of the watch runs any
	// more. send never blocks.
	Events(ctx context.Context, send func(Event)) (<-chan error, error)
}

// NamespaceOpener opens a container's namespaces
// (Capabilities.NamespaceFiles).
type NamespaceOpener interface {
	// OpenNamespace opens the namespace of type typ of container id,
	// created, running or paused, as its init was created with it: never
	// the namespace of a process that took the init's pid after it
	// exited, nor one the init moved to since (both failed-precondition).
	// path names the same namespace (/proc/<pid>/ns/<name>) for as long
	// as the init lives; the file names it for as long as it is open.
	OpenNamespace(ctx context.Context, id string, typ specs.LinuxNamespaceType) (f *os.File, path string, err error)
}

// ContainerAser reaches backend-native types for one container
// (runtime.Container.As); see the backend's documentation for the types it
// accepts. A backend without per-container types does not implement it.
type ContainerAser interface {
	ContainerAs(id string, i any) bool
}

// DiskMaker is what a backend with Capabilities.RootDisk implements besides
// Runtime. The runtime owns every root disk: it keeps the image file under
// its state directory, attaches it through its one volume manager under its
// one policy (probe, whitelist, fsck, a nosuid,nodev host mount), and
// detaches and removes it. The backend only fills new images and copies a
// container's disk consistently; it never mounts one.
type DiskMaker interface {
	// MakeDisk makes the backend's filesystem in a new image file at path
	// (which does not exist yet) of size bytes (0: the backend's default),
	// holding a copy of the tree under tree, without mounting anything. A
	// size the filesystem or the tree does not fit is invalid-argument.
	MakeDisk(ctx context.Context, path string, size int64, tree string) (*MadeDisk, error)
	// SnapshotDisk writes a consistent copy of container id's root disk
	// to dst (a new file), even while the container runs: the runtime
	// attaches it read-only and archives it (Capabilities.Snapshot).
	SnapshotDisk(ctx context.Context, id, dst string) error
}

// MadeDisk is what MakeDisk made.
type MadeDisk struct {
	// Modes are modes the filesystem's maker could not write (an xfs
	// protofile has no sticky bit). The runtime sets them under the
	// mounted disk before anything runs on it.
	Modes []PathMode
}

// PathMode is the mode of one path of a new disk.
type PathMode struct {
	// Path is relative to the disk's root; it never leaves it.
	Path string
	// Mode holds the permission bits and fs.ModeSticky, ModeSetgid,
	// ModeSetuid.
	Mode fs.FileMode
}
