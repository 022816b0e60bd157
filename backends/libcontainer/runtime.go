package libcontainer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	lc "github.com/opencontainers/runc/libcontainer"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/runtime/driver"
)

// DefaultRoot is where state lives unless Open is given another directory.
const DefaultRoot = "/var/lib/berth"

// Runtime is the embedded engine. It implements driver.Runtime; wrap it with
// runtime.New.
type Runtime struct {
	root         string
	cgroupParent string

	attached bool

	mu sync.Mutex
	// copies tracks output copied by this process for containers created
	// with non-file writers; Wait returns only once it is done.
	copies map[string]*sync.WaitGroup
	// exited is closed when an attached container's exit is recorded.
	exited map[string]chan struct{}
	// supervisor is the supervisor that took this process's last
	// container: the first one asked for the next.
	supervisor int
	// supervisorShare caps the containers of a supervisor this process
	// starts (0: its descriptor limit does).
	supervisorShare int
	// supervisorExe, when set, is the binary supervisors are started
	// from (WithSupervisorBinary), held open since Open checked it.
	supervisorExe *os.File
	// loads and records keep what was read of containers' state files
	// (see load.go).
	loads   fileCache[*lc.Container]
	records fileCache[*record]
}

// Option configures Open.
type Option func(*Runtime) error

// WithCgroupParent sets the cgroup under which containers are placed
// (default "berth": /sys/fs/cgroup/<controller>/berth/<id>).
func WithCgroupParent(p string) Option {
	return func(r *Runtime) error {
		if p == "" || filepath.IsAbs(p) || p != filepath.Clean(p) {
			return fmt.Errorf("cgroup parent %q must be a clean relative path: %w", p, errdefs.ErrInvalidArgument)
		}
		r.cgroupParent = p
		return nil
	}
}

// Attached makes the calling process the direct parent of the containers it
// creates, instead of the state root's supervisor: this process copies
// their output and records their exits, with no request to a supervisor
// (nor one started for the first container). It
// suits a foreground run such as `berthctl run`. Other processes list,
// control and wait for these containers as for any other. If the owner dies
// first, its containers live on as orphans, as with `runc run`: still
// listed and controllable, but their exit codes are unknown (-1).
func Attached() Option {
	return func(r *Runtime) error {
		r.attached = true
		return nil
	}
}

// WithSupervisorBinary makes the supervisors this process starts run
// path, a program whose main calls Init first and links little else, such
// as examples/berth-supervisor, instead of a re-exec of the calling
// binary. The supervisor is the parent of its containers' inits, which
// libcontainer starts as re-execs of the supervisor's own binary: a small
// binary starts every supervised container sooner (its Go runtime and
// package initialization are the biggest part of an init's start) and
// costs less memory than a large caller. The binary must come from the
// same berth (their protocol is checked as it starts): build it with the
// program that ships it, as containerd ships its shims.
//
// path must be absolute, a regular executable file owned by root (or by
// this process's user) and not writable by group or others, for it runs
// as root and keeps every container. It is opened and checked here, and
// what was opened is what runs, whatever happens to path later (through
// a descriptor closed on exec: a script's interpreter could not open it,
// so the binary is a program, not a script).
func WithSupervisorBinary(path string) Option {
	return func(r *Runtime) error {
		f, err := openSupervisorBinary(path)
		if err != nil {
			return err
		}
		if r.supervisorExe != nil {
			r.supervisorExe.Close()
		}
		r.supervisorExe = f
		return nil
	}
}

// SupervisorBinaryName is the file name programs ship
// examples/berth-supervisor under.
const SupervisorBinaryName = "berth-supervisor"

// SupervisorBinaryBeside returns the path of SupervisorBinaryName in the
// running program's directory if there is such a file, else "": where a
// program that ships the supervisor beside itself finds it, for
// WithSupervisorBinary.
func SupervisorBinaryBeside() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	p := filepath.Join(filepath.Dir(exe), SupervisorBinaryName)
	if _, err := os.Lstat(p); err != nil {
		return ""
	}
	return p
}

// openSupervisorBinary opens path (O_PATH, following no symlink at its
// last element) and checks what it is.
func openSupervisorBinary(path string) (*os.File, error) {
	bad := func(why string) error {
		return fmt.Errorf("supervisor binary %q: %s: %w", path, why, errdefs.ErrInvalidArgument)
	}
	if !filepath.IsAbs(path) || path != filepath.Clean(path) {
		return nil, bad("not a clean absolute path")
	}
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return nil, bad(err.Error())
		}
		return nil, fmt.Errorf("supervisor binary %q: %w", path, classify(err))
	}
	f := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("supervisor binary %q: %w", path, classify(err))
	}
	why := ""
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		why = "not a regular file"
	case st.Mode&0o111 == 0:
		why = "not executable"
	case st.Uid != 0 && int(st.Uid) != os.Geteuid():
		why = fmt.Sprintf("owned by uid %d, neither root nor this process's user", st.Uid)
	case st.Mode&0o022 != 0:
		why = fmt.Sprintf("writable by group or others (mode %o)", st.Mode&0o7777)
	}
	if why != "" {
		f.Close()
		return nil, bad(why)
	}
	return f, nil
}

// Open returns the engine keeping its state under root (created if needed).
// Containers created by earlier processes on the same root are found again.
func Open(root string, opts ...Option) (*Runtime, error) {
	if root == "" {
		root = DefaultRoot
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	r := &Runtime{root: abs, cgroupParent: "berth", copies: map[string]*sync.WaitGroup{}, exited: map[string]chan struct{}{}}
	for _, o := range opts {
		if err := o(r); err != nil {
			r.Close()
			return nil, err
		}
	}
	// 0711: a user-namespaced container's init must traverse down to its
	// ID-mapped root filesystem, but must not list other containers.
	for _, d := range []string{r.root, r.containersDir(), r.runcRoot()} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			r.Close()
			return nil, fmt.Errorf("state root: %w", classify(err))
		}
		if err := os.Chmod(d, 0o711); err != nil {
			r.Close()
			return nil, fmt.Errorf("state root: %w", classify(err))
		}
	}
	return r, nil
}

// Root returns the state directory.
func (r *Runtime) Root() string { return r.root }

func (r *Runtime) containersDir() string       { return filepath.Join(r.root, "containers") }
func (r *Runtime) runcRoot() string            { return filepath.Join(r.root, "runc") }
func (r *Runtime) dir(id string) string        { return filepath.Join(r.containersDir(), id) }
func (r *Runtime) recordPath(id string) string { return filepath.Join(r.dir(id), "record.json") }

// traversable checks that a user-namespaced container's root, which is no
// host user, can reach its root filesystem under dir: every directory on
// the way must let others search it.
func traversable(dir string) error {
	for p := dir; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("state directory %s: %s is not searchable by others (mode %o), so a user-namespaced container cannot reach its root filesystem: %w", dir, p, fi.Mode().Perm(), errdefs.ErrFailedPrecondition)
		}
		if p == "/" {
			return nil
		}
	}
}

// record is berth's own state for a container, written before any action.
type record struct {
	ID        string            `json:"id"`
	CreatedAt time.Time         `json:"created_at"`
	Labels    map[string]string `json:"labels,omitempty"`
	Spec      *specs.Spec       `json:"spec"`
	Rootfs    string            `json:"rootfs"`
	IDMapped  bool              `json:"id_mapped,omitempty"`
	// ImageTree is the image's shared unpacked tree under an overlay
	// rootfs, for a container made from an image.
	ImageTree string `json:"image_tree,omitempty"`
	// Supervisor is the number of the supervisor that keeps the
	// container, plus one (0: its Attached owner keeps it).
	Supervisor int `json:"supervisor,omitempty"`
	// CRILog is the host file the container's output also goes to in
	// the CRI log format, or empty (see crilog.go).
	CRILog string `json:"cri_log,omitempty"`
	// OpenStdin: the init's standard input is kept open for attachments
	// (control.go).
	OpenStdin bool `json:"open_stdin,omitempty"`
	// CgroupsPath is the container's cgroup when berth named it (parent/
	// id), for a cleanup that finds no libcontainer state (its create was
	// killed while the init started, after the cgroups were made and
	// before the state was written).
	CgroupsPath string `json:"cgroups_path,omitempty"`
}

// readRecord reads the container's record, shared through the cache (see
// load.go): callers copy what they change.
func (r *Runtime) readRecord(id string) (*record, error) {
	shared, err := r.records.get(r.recordPath(id), func() (*record, error) {
		var rec record
		return &rec, fsutil.ReadJSON(r.recordPath(id), &rec)
	})
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no such container: %w", errdefs.ErrNotFound)
		}
		return nil, err
	}
	rec := *shared
	return &rec, nil
}

// Name implements driver.Runtime.
func (r *Runtime) Name() string { return "libcontainer" }

// The optional parts of the driver contract the embedded engine serves;
// its containers have no root disk of their own.
var (
	_ driver.Execer          = (*Runtime)(nil)
	_ driver.Pauser          = (*Runtime)(nil)
	_ driver.Updater         = (*Runtime)(nil)
	_ driver.StatsReader     = (*Runtime)(nil)
	_ driver.Logger          = (*Runtime)(nil)
	_ driver.VolumeAttacher  = (*Runtime)(nil)
	_ driver.Snapshotter     = (*Runtime)(nil)
	_ driver.CRILogReopener  = (*Runtime)(nil)
	_ driver.NamespaceOpener = (*Runtime)(nil)
	_ driver.Attacher        = (*Runtime)(nil)
)

// Capabilities implements driver.Runtime.
func (r *Runtime) Capabilities() driver.Capabilities {
	return driver.Capabilities{
		Exec: true, Pause: true, Update: true, Stats: true, Logs: true,
		UserNamespace: true, CgroupNamespace: true, RawBlock: true, HotAttach: true, Snapshot: true,
		CRILog:         true,
		JoinNamespaces: true, NamespaceFiles: true,
		// The monitor (or the Attached owner) holds the init's
		// terminal and streams and serves them on its control socket.
		Terminal: true, Attach: true,
		// runc's init mounts every bind before it waits on the exec
		// FIFO, and a container is never started twice.
		BindsAtCreate: true,
	}
}

// As implements driver.Runtime: **Runtime.
func (r *Runtime) As(i any) bool {
	p, ok := i.(**Runtime)
	if ok {
		*p = r
	}
	return ok
}

// Close implements driver.Runtime. Containers keep running.
func (r *Runtime) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.supervisorExe != nil {
		r.supervisorExe.Close()
		r.supervisorExe = nil
	}
	return nil
}

func (r *Runtime) load(id string) (*lc.Container, error) {
	c, err := r.loadContainer(id)
	if err != nil {
		return nil, classify(err)
	}
	return c, nil
}
