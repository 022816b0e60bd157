package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/runtime/driver"
	"github.com/berthrun/berth/volume"
)

// Config is what a container is created from: an OCI runtime spec plus
// berth's own fields.
type Config struct {
	// Spec is the OCI runtime spec. Start from DefaultSpec. Root.Path is
	// the root filesystem directory, unless Image is set.
	Spec *specs.Spec
	// Image, when set, is the reference of the image the root filesystem
	// comes from, and Root.Path must be empty. Backends that do not take
	// images refuse it with not-implemented.
	Image string
	// KeepProcess uses the spec's process as it is: the image's
	// entrypoint, command, environment, working directory and user are
	// not applied to it (for a caller that merges them itself, as the
	// Kubernetes CRI does, where a command given replaces the image's
	// entrypoint).
	KeepProcess bool
	// RootDisk, when set, is an existing filesystem image file to adopt
	// as the container's root disk (a snapshot, or a disk moved from
	// another root), on backends with Capabilities.RootDisk; Root.Path
	// must then be empty. The disk goes through the runtime's volume
	// policy like any root disk; the file moves into the runtime's state
	// directory once the container exists (a refused create leaves it).
	RootDisk string
	// DiskSize is the size in bytes of the container's own root disk, on
	// backends that give it one (Capabilities.RootDisk); 0 takes the
	// backend's default. Other backends refuse a size with
	// not-implemented.
	DiskSize int64
	// UserNamespace asks for a private user namespace: berth allocates a
	// host ID range for the container from the runtime's pool and maps
	// the container's 0..size-1 onto it. Any user namespace or ID mapping
	// already in Spec is refused: the pool is the only source of ranges.
	UserNamespace bool
	// Join shares namespaces of other containers of this runtime, as
	// Docker's --network, --ipc and --pid container:ID do, on backends
	// with Capabilities.JoinNamespaces (else not-implemented): each key a
	// namespace type (network, ipc, uts, pid, user), each value the ID of
	// a created or running container of this same runtime, whose init's
	// namespace of that type the container then shares (a pod's
	// containers join its infra container's). The mount, cgroup and time
	// namespaces cannot be joined, nor a container itself (both
	// invalid-argument); a container that does not exist is not-found,
	// one that is stopped, or being created or deleted, is
	// failed-precondition. The spec must not join that type by path
	// (invalid-argument); it may list the type or not, the container gets
	// it either way. Joining the UTS namespace takes the other's hostname:
	// the spec's hostname and domain name must be empty.
	//
	// Joining a user namespace takes the other's ID mappings too: the root
	// filesystem and volumes are ID-mapped with them, raw block volumes
	// are allowed as in a user namespace of the container's own, and
	// UserNamespace must be false. The other must have a user namespace of
	// its own (failed-precondition otherwise). Its block of the ID pool
	// stays allocated until the last container holding it is deleted.
	//
	// The security policy does not refuse a join: the namespaces are
	// another container's of this runtime, created under the same checks.
	// It refuses, as for a spec of this runtime, joining one that shares
	// the host's (AllowHostNamespaces) or that was joined by path
	// (AllowPrivileged). Which containers may share is the caller's to
	// decide: berth knows no tenants, only containers.
	//
	// A container that others joined cannot be deleted while they exist
	// (failed-precondition, naming them): delete them first. It may stop
	// meanwhile; their processes keep its network, IPC, UTS and user
	// namespaces, but the kernel kills every process of a PID namespace
	// whose init exits.
	Join map[specs.LinuxNamespaceType]string
	// Volumes are attached before the container is created, through the
	// runtime's volume policy (see package volume), and detached when it
	// is deleted.
	Volumes []volume.Spec
	// Labels are kept with the container.
	Labels map[string]string
	// IO connects the init process's standard streams. Whether or not
	// writers are given, the output is also kept in a log that
	// Container.Logs reads back (as `docker logs` does for an attached
	// container).
	//
	// With Spec.Process.Terminal the init gets a pseudo-terminal, on
	// backends with Capabilities.Terminal (not-implemented elsewhere):
	// everything it writes, stdout and stderr alike, goes to IO.Stdout
	// and the logs as stdout, IO.Stdin is typed into it (a terminal has
	// no end of input: the end of IO.Stdin closes nothing), and
	// Spec.Process.ConsoleSize is its first size (Container.Resize
	// changes it).
	IO IO
	// OpenStdin keeps the init's standard input open for
	// Container.Attach, as `docker run -i` does for a detached
	// container, on backends with Capabilities.Attach (not-implemented
	// elsewhere). IO.Stdin must then be nil (invalid-argument): the
	// attachments feed it. StdinOnce closes it once the first
	// attachment's input ends (or it detaches), as Docker's and the
	// CRI's stdin_once do, and as there not with a terminal; it needs
	// OpenStdin.
	OpenStdin, StdinOnce bool
	// Log caps that log: zero fields take DefaultLogMaxSize and
	// DefaultLogMaxFiles. A container writing as fast as it can never
	// makes it larger than MaxSize*MaxFiles bytes.
	Log LogLimits
	// CRILog, when set, is a host file the container's output also goes
	// to, in the Kubernetes CRI log format (the file a CRI runtime writes
	// at PodSandboxConfig.log_directory + ContainerConfig.log_path, which
	// the kubelet reads): a record a line, "<RFC 3339 time> <stdout or
	// stderr> <F or P> <the line>", P for the pieces of a line longer
	// than 16 KiB and for output that ends without a newline. The kept
	// log (Logs, WriteLogs) and the IO writers get the output as they
	// do without it, but for one thing: with one writer for both
	// streams, stdout's and stderr's writes keep their order within
	// each stream only, as they reach it through pipes of their own.
	// The path must be absolute and clean, and its directory
	// must exist (invalid-argument otherwise); the file is created
	// (mode 0640) or appended to. Whatever is at the path when it is
	// opened must be a regular file of one link: a symbolic link, a FIFO
	// or any other file planted there is refused (failed-precondition),
	// never followed nor opened. The file has no cap: whoever set the
	// path rotates it (Container.ReopenLog). The file is written by
	// whatever copies the container's output (on the embedded engine
	// the container's monitor), so it goes on while the caller is gone,
	// and a file that cannot be written never holds up the container: its
	// records are dropped and the failure reported in the engine's own
	// log. Backends without Capabilities.CRILog refuse it with
	// not-implemented.
	CRILog string
}

// The caps of a container's log unless its Config sets others: one file of
// 10 MiB and one rotated file, as Docker's json-file with max-size=10m and
// max-file=2.
const (
	DefaultLogMaxSize  = 10 << 20
	DefaultLogMaxFiles = 2
)

// logLimits are cfg's log caps with the defaults filled in.
func logLimits(l LogLimits) LogLimits {
	if l.MaxSize == 0 {
		l.MaxSize = DefaultLogMaxSize
	}
	if l.MaxFiles == 0 {
		l.MaxFiles = DefaultLogMaxFiles
	}
	return l
}

// DefaultSpec returns the spec berth uses when the caller has no opinion:
// private PID, mount, IPC, UTS, network (loopback only) and cgroup
// namespaces, the capability set Docker grants by default, no new
// privileges, the usual pseudo filesystems and masked kernel paths.
func DefaultSpec(rootfs string, args ...string) *specs.Spec {
	caps := DefaultCapabilities()
	rw := "rwm"
	return &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: rootfs},
		Process: &specs.Process{
			Args: args,
			Env:  []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"},
			Cwd:  "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  slices.Clone(caps),
				Effective: slices.Clone(caps),
				Permitted: slices.Clone(caps),
			},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
			NoNewPrivileges: true,
		},
		Hostname: "berth",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.CgroupNamespace},
			},
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: rw}},
			},
			MaskedPaths:   slices.Clone(defaultMaskedPaths),
			ReadonlyPaths: slices.Clone(defaultReadonlyPaths),
		},
	}
}

// validateConfig checks what every backend relies on. Backends get specs
// that passed it.
func validateConfig(id string, c *Config) error {
	bad := func(format string, a ...any) error { return invalidConfig(id, format, a...) }
	if c == nil || c.Spec == nil {
		return bad("no spec")
	}
	if c.Log.MaxSize < 0 || (c.Log.MaxSize > 0 && c.Log.MaxSize < 4096) {
		return bad("log max size %d: at least 4096 bytes", c.Log.MaxSize)
	}
	if c.Log.MaxFiles < 0 || c.Log.MaxFiles > 100 {
		return bad("log max files %d: 1 to 100", c.Log.MaxFiles)
	}
	if c.CRILog != "" && (!filepath.IsAbs(c.CRILog) || filepath.Clean(c.CRILog) != c.CRILog || c.CRILog == "/") {
		return bad("CRI log %q is not an absolute, clean path to a file", c.CRILog)
	}
	if err := validateRoot(id, c); err != nil {
		return err
	}
	s := c.Spec
	if s.Process == nil || (len(s.Process.Args) == 0 && c.Image == "") {
		return bad("spec has no process arguments")
	}
	if s.Process.Cwd != "" && !filepath.IsAbs(s.Process.Cwd) {
		return bad("working directory %q is not absolute", s.Process.Cwd)
	}
	if s.Process.ConsoleSize != nil && !s.Process.Terminal {
		return bad("a console size without a terminal")
	}
	if cs := s.Process.ConsoleSize; cs != nil && !boxFits(*cs) {
		return bad("console size %dx%d: a terminal has at most 65535 rows and columns", cs.Height, cs.Width)
	}
	if c.OpenStdin && c.IO.Stdin != nil {
		return bad("standard input both open for attachments and given")
	}
	if c.StdinOnce && !c.OpenStdin {
		return bad("stdin once without an open standard input")
	}
	if s.Linux == nil {
		return bad("spec has no linux section")
	}
	if driver.HasUserNamespace(s) {
		return bad("user namespaces are requested with Config.UserNamespace, not in the spec")
	}
	if len(s.Linux.UIDMappings) > 0 || len(s.Linux.GIDMappings) > 0 {
		return bad("ID mappings come from the runtime's pool, not from the spec")
	}
	if err := validateMountsAndDevices(id, s); err != nil {
		return err
	}
	if err := validateSharedRoot(id, c); err != nil {
		return err
	}
	return validateJoin(id, c)
}

// invalidConfig is an invalid-argument error about the config of id.
func invalidConfig(id, format string, a ...any) error {
	return fmt.Errorf("container %q: %s: %w", id, fmt.Sprintf(format, a...), errdefs.ErrInvalidArgument)
}

// validateRoot checks that c gives one root: a directory, an image or a
// root disk, paths absolute.
func validateRoot(id string, c *Config) error {
	s := c.Spec
	sources := 0
	for _, set := range []bool{c.Image != "", c.RootDisk != "", s.Root != nil && s.Root.Path != ""} {
		if set {
			sources++
		}
	}
	switch {
	case sources > 1:
		return invalidConfig(id, "give one of a root filesystem directory, an image or a root disk")
	case sources == 0:
		return invalidConfig(id, "spec has no root filesystem, image or root disk")
	case c.RootDisk != "" && !filepath.IsAbs(c.RootDisk):
		return invalidConfig(id, "root disk %q is not an absolute path", c.RootDisk)
	case s.Root != nil && s.Root.Path != "" && !filepath.IsAbs(s.Root.Path):
		return invalidConfig(id, "root filesystem %q is not an absolute path", s.Root.Path)
	}
	return nil
}

// validateMountsAndDevices checks the spec's mounts, devices and
// resources: block devices come only through volumes.
func validateMountsAndDevices(id string, s *specs.Spec) error {
	for _, m := range s.Mounts {
		if !filepath.IsAbs(m.Destination) {
			return invalidConfig(id, "mount destination %q is not absolute", m.Destination)
		}
		if err := checkSpecMount(m); err != nil {
			return invalidConfig(id, "mount at %s: %v", m.Destination, err)
		}
	}
	for _, d := range s.Linux.Devices {
		if d.Type == "b" {
			return invalidConfig(id, "block device %s: block devices come through Config.Volumes (raw-block), under the volume policy", d.Path)
		}
	}
	if r := s.Linux.Resources; r != nil {
		for _, d := range r.Devices {
			if d.Allow && (d.Type == "b" || d.Type == "a" || d.Type == "") {
				return invalidConfig(id, "devices cgroup rule allows block devices: they come through Config.Volumes (raw-block)")
			}
		}
		if err := validateResources(id, fromSpecResources(r)); err != nil {
			return err
		}
	}
	return nil
}

// specMountTypes are the filesystems a spec may mount itself: the pseudo
// filesystems every container has, tmpfs, and binds of directories or
// files. Anything backed by a device is a volume, and goes through the
// volume policy (Config.Volumes), never straight to the kernel.
var specMountTypes = map[string]bool{
	"proc": true, "sysfs": true, "tmpfs": true, "devpts": true, "mqueue": true,
	"cgroup": true, "cgroup2": true, "bind": true, "none": true, "": true,
}

func checkSpecMount(m specs.Mount) error {
	if !specMountTypes[m.Type] {
		return fmt.Errorf("filesystem type %q is mounted through Config.Volumes, under the volume policy", m.Type)
	}
	isBind := isBindMount(m)
	if (m.Type == "none" || m.Type == "") && !isBind {
		return fmt.Errorf("a mount of type %q must be a bind", m.Type)
	}
	if isBind {
		if fi, err := os.Stat(m.Source); err == nil && fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0 {
			return fmt.Errorf("%s is a block device: raw devices come through Config.Volumes (raw-block)", m.Source)
		}
	}
	return nil
}

// validateSharedRoot refuses a bind or volume with shared propagation in
// a root filesystem whose propagation the spec sets to anything but
// shared: the engine's bind would then be a copy that no longer shares
// anything with the host. Left unset, the engine makes it shared.
func validateSharedRoot(id string, c *Config) error {
	switch c.Spec.Linux.RootfsPropagation {
	case "", "shared", "rshared":
		return nil
	}
	for _, m := range c.Spec.Mounts {
		if isBindMount(m) && bindVolumeSpec(m).Propagation == volume.PropagationShared {
			return invalidConfig(id, "the bind at %s propagates both ways, the root filesystem's propagation is %s", m.Destination, c.Spec.Linux.RootfsPropagation)
		}
	}
	for _, v := range c.Volumes {
		if v.Propagation == volume.PropagationShared {
			return invalidConfig(id, "the volume at %s propagates both ways, the root filesystem's propagation is %s", v.Destination, c.Spec.Linux.RootfsPropagation)
		}
	}
	return nil
}
