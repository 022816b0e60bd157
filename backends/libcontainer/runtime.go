package libcontainer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	lc "github.com/opencontainers/runc/libcontainer"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/internal/idmap"
	"github.com/berthrun/berth/internal/logfile"
	"github.com/berthrun/berth/internal/reap"
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
// creates, instead of a monitor process per container: creation is faster
// (one process less to start) and this process records their exits. It
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
			return nil, err
		}
	}
	// 0711: a user-namespaced container's init must traverse down to its
	// ID-mapped root filesystem, but must not list other containers.
	for _, d := range []string{r.root, r.containersDir(), r.runcRoot()} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("state root: %w", classify(err))
		}
		if err := os.Chmod(d, 0o711); err != nil {
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
	ImageTree  string `json:"image_tree,omitempty"`
	MonitorPid int    `json:"monitor_pid,omitempty"`
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
	_ driver.Execer         = (*Runtime)(nil)
	_ driver.Pauser         = (*Runtime)(nil)
	_ driver.Updater        = (*Runtime)(nil)
	_ driver.StatsReader    = (*Runtime)(nil)
	_ driver.Logger         = (*Runtime)(nil)
	_ driver.VolumeAttacher = (*Runtime)(nil)
	_ driver.Snapshotter    = (*Runtime)(nil)
)

// Capabilities implements driver.Runtime.
func (r *Runtime) Capabilities() driver.Capabilities {
	return driver.Capabilities{
		Exec: true, Pause: true, Update: true, Stats: true, Logs: true,
		UserNamespace: true, CgroupNamespace: true, RawBlock: true, HotAttach: true, Snapshot: true,
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
func (r *Runtime) Close() error { return nil }

func (r *Runtime) load(id string) (*lc.Container, error) {
	c, err := r.loadContainer(id)
	if err != nil {
		return nil, classify(err)
	}
	return c, nil
}

// Create implements driver.Runtime.
func (r *Runtime) Create(ctx context.Context, req *driver.CreateRequest) (retErr error) {
	if req.Image != "" && req.ImageSource == nil {
		return fmt.Errorf("image %q: this engine takes images from berth's image store (runtime.WithImageStore): %w", req.Image, errdefs.ErrNotImplemented)
	}
	if req.Spec.Linux.Seccomp != nil && !seccompBuilt {
		return fmt.Errorf("seccomp: this program was built without seccomp support and cannot confine the container; build it with -tags seccomp (cgo and libseccomp-dev): %w", errdefs.ErrFailedPrecondition)
	}
	dir := r.dir(req.ID)
	if err := os.Mkdir(dir, 0o711); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("container exists: %w", errdefs.ErrAlreadyExists)
		}
		return err
	}
	rec := &record{ID: req.ID, CreatedAt: time.Now().UTC(), Labels: req.Labels, Spec: req.Spec, Rootfs: req.Spec.Root.Path}
	defer func() {
		if retErr != nil {
			_ = r.cleanup(req.ID, rec)
		}
	}()
	userns := driver.HasUserNamespace(req.Spec)
	if userns {
		if err := traversable(r.root); err != nil {
			return err
		}
	}
	if req.ImageSource != nil {
		tree, err := req.ImageSource.Rootfs(ctx)
		if err != nil {
			return err
		}
		rec.Rootfs, rec.ImageTree = filepath.Join(dir, "rootfs"), tree
	} else if userns {
		rec.Rootfs = filepath.Join(dir, "rootfs")
		rec.IDMapped = true
	}
	// The record goes down before anything is mounted or spawned, so that a
	// crash at any later point leaves something Delete can clean up.
	if err := fsutil.WriteJSON(r.recordPath(req.ID), rec); err != nil {
		return err
	}
	if rec.ImageTree != "" {
		if err := mountImageRootfs(dir, rec.ImageTree, req.Spec.Linux.UIDMappings, req.Spec.Linux.GIDMappings); err != nil {
			return err
		}
	} else if userns {
		if err := os.Mkdir(rec.Rootfs, 0o755); err != nil {
			return err
		}
		if err := idmap.BindMount(req.Spec.Root.Path, rec.Rootfs, req.Spec.Linux.UIDMappings, req.Spec.Linux.GIDMappings); err != nil {
			return fmt.Errorf("ID-mapped root filesystem: %v: %w", err, errdefs.ErrNotImplemented)
		}
	}
	cfg, err := nativeConfig(req.ID, r.cgroupParent, withDevices(req.Spec, req.Devices), rec.Rootfs)
	if err != nil {
		return err
	}
	if r.attached {
		if err := r.startAttached(req.ID, cfg, req.Spec.Process, req.IO, logLimits(req.Log)); err != nil {
			return err
		}
	} else {
		pid, err := r.spawnMonitor(ctx, req.ID, cfg, req.Spec.Process, req.IO, logLimits(req.Log))
		if err != nil {
			return err
		}
		rec.MonitorPid = pid
		if err := fsutil.WriteJSON(r.recordPath(req.ID), rec); err != nil {
			return err
		}
	}
	// The init waits on its exec FIFO: the mount table is still berth's
	// alone, and the volumes' mounts are known by their IDs from here on.
	c, err := r.load(req.ID)
	if err != nil {
		return err
	}
	st, err := c.State()
	if err != nil {
		return classify(err)
	}
	uid, gid := 0, 0
	if m := req.Spec.Linux.UIDMappings; len(m) > 0 {
		uid, gid = int(m[0].HostID), int(req.Spec.Linux.GIDMappings[0].HostID)
	}
	return r.recordVolumeMounts(ctx, req.ID, st.InitProcessPid, uid, gid, req.Spec, req.Devices)
}

// Start implements driver.Runtime.
func (r *Runtime) Start(ctx context.Context, id string) error {
	c, err := r.load(id)
	if err != nil {
		return err
	}
	return classify(c.Exec())
}

// Wait implements driver.Runtime.
func (r *Runtime) Wait(ctx context.Context, id string) (driver.ExitStatus, error) {
	rec, err := r.readRecord(id)
	if err != nil {
		return driver.ExitStatus{}, err
	}
	r.mu.Lock()
	wg, exited := r.copies[id], r.exited[id]
	r.mu.Unlock()
	if exited != nil {
		select {
		case <-exited:
		case <-ctx.Done():
			return driver.ExitStatus{}, ctx.Err()
		}
	} else if err := r.waitMonitor(ctx, id, rec.MonitorPid); err != nil {
		return driver.ExitStatus{}, err
	}
	if err := r.waitOrphan(ctx, id); err != nil {
		return driver.ExitStatus{}, err
	}
	if wg != nil {
		copied := make(chan struct{})
		go func() { wg.Wait(); close(copied) }()
		select {
		case <-copied:
		case <-ctx.Done():
			return driver.ExitStatus{}, ctx.Err()
		}
	}
	st, err := r.readExit(id)
	if err != nil {
		return driver.ExitStatus{}, err
	}
	return *st, nil
}

// waitOrphan waits for an init whose monitor or owner died before it: no
// exit will be recorded, so follow the init itself.
func (r *Runtime) waitOrphan(ctx context.Context, id string) error {
	if _, err := os.Stat(filepath.Join(r.dir(id), exitFile)); err == nil {
		return nil
	}
	c, err := r.loadContainer(id)
	if err != nil {
		return nil // never started, or destroyed: nothing runs
	}
	state, err := c.State()
	if err != nil || state.InitProcessPid <= 0 {
		return nil
	}
	pidfd, err := unix.PidfdOpen(state.InitProcessPid, 0)
	if err != nil {
		return nil // gone already
	}
	defer unix.Close(pidfd)
	// Status checks the pid's start time: if it still reports a live init
	// after the pidfd was opened, the pidfd is the init's, not a reuse.
	if st, err := c.Status(); err != nil || st == lc.Stopped {
		return nil
	}
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := unix.Poll(fds, 100)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll init: %w", err)
		}
		if n > 0 {
			return nil
		}
	}
}

func (r *Runtime) readExit(id string) (*driver.ExitStatus, error) {
	var st driver.ExitStatus
	err := fsutil.ReadJSON(filepath.Join(r.dir(id), exitFile), &st)
	if errors.Is(err, os.ErrNotExist) {
		// The monitor died before the container's init (it was killed):
		// the exit code is lost.
		return &driver.ExitStatus{Code: -1, ExitedAt: time.Now().UTC()}, nil
	}
	if err != nil {
		return nil, err
	}
	return &st, nil
}

// Kill implements driver.Runtime.
func (r *Runtime) Kill(ctx context.Context, id string, sig syscall.Signal) error {
	c, err := r.load(id)
	if err != nil {
		return err
	}
	return classify(c.Signal(sig))
}

// Delete implements driver.Runtime.
func (r *Runtime) Delete(ctx context.Context, id string) error {
	rec, err := r.readRecord(id)
	if err != nil {
		return err
	}
	if c, err := r.loadContainer(id); err == nil {
		st, err := c.Status()
		if err != nil {
			return classify(err)
		}
		switch st {
		case lc.Running, lc.Paused:
			return fmt.Errorf("container is %s: %w", st, errdefs.ErrFailedPrecondition)
		case lc.Created:
			// The init waits on its exec fifo; end it and let the monitor
			// record that before the cgroup goes.
			_ = c.Signal(unix.SIGKILL)
			if err := r.waitMonitor(ctx, id, rec.MonitorPid); err != nil {
				return err
			}
		}
		if err := killRemaining(ctx, c); err != nil {
			return err
		}
		if err := c.Destroy(); err != nil {
			return classify(err)
		}
	}
	// The monitor exits once the init is gone; let it write its record
	// before the directory goes.
	if err := r.waitMonitor(ctx, id, rec.MonitorPid); err != nil {
		return err
	}
	return r.cleanup(id, rec)
}

// cleanup removes what Create made, in reverse: libcontainer's state, the
// root filesystem mount, the directory. It tolerates any of them missing,
// so it also finishes a create that crashed half-way.
func (r *Runtime) cleanup(id string, rec *record) error {
	if c, err := r.loadContainer(id); err == nil {
		_ = c.Signal(unix.SIGKILL)
		_ = killRemaining(context.Background(), c)
		_ = c.Destroy()
	}
	_ = os.RemoveAll(filepath.Join(r.runcRoot(), id))
	if rec.IDMapped {
		if err := fsutil.Unmount(rec.Rootfs); err != nil {
			return fmt.Errorf("unmount root filesystem: %w", err)
		}
	}
	if rec.ImageTree != "" {
		if err := unmountImageRootfs(r.dir(id)); err != nil {
			return err
		}
	}
	r.mu.Lock()
	delete(r.copies, id)
	delete(r.exited, id)
	r.mu.Unlock()
	return os.RemoveAll(r.dir(id))
}

// State implements driver.Runtime.
func (r *Runtime) State(ctx context.Context, id string) (*driver.Info, error) {
	rec, err := r.readRecord(id)
	if err != nil {
		return nil, err
	}
	info := &driver.Info{ID: id, CreatedAt: rec.CreatedAt, Labels: rec.Labels, Spec: rec.Spec, Status: driver.StatusUnknown}
	c, err := r.loadContainer(id)
	switch {
	case err == nil:
		st, err := c.Status()
		if err != nil {
			return nil, classify(err)
		}
		info.Status = map[lc.Status]driver.Status{
			lc.Created: driver.StatusCreated, lc.Running: driver.StatusRunning,
			lc.Paused: driver.StatusPaused, lc.Stopped: driver.StatusStopped,
		}[st]
		if st != lc.Stopped {
			if s, err := c.State(); err == nil {
				info.Pid = s.InitProcessPid
			}
		}
	case errors.Is(err, lc.ErrNotExist) || errors.Is(err, os.ErrNotExist):
		// No engine state: a create in progress or one that crashed.
		if !r.monitorAlive(id) {
			info.Status = driver.StatusStopped
		}
	default:
		return nil, classify(err)
	}
	if info.Status == driver.StatusStopped {
		if st, err := r.readExit(id); err == nil && st.Code != -1 {
			info.Exit = st
		}
	}
	return info, nil
}

// List implements driver.Runtime.
func (r *Runtime) List(ctx context.Context) ([]*driver.Info, error) {
	ents, err := os.ReadDir(r.containersDir())
	if err != nil {
		return nil, err
	}
	var out []*driver.Info
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		info, err := r.State(ctx, e.Name())
		if errdefs.IsNotFound(err) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("container %q: %w", e.Name(), err)
		}
		out = append(out, info)
	}
	return out, nil
}

// Pause implements driver.Runtime.
func (r *Runtime) Pause(ctx context.Context, id string) error {
	c, err := r.load(id)
	if err != nil {
		return err
	}
	return classify(c.Pause())
}

// Resume implements driver.Runtime.
func (r *Runtime) Resume(ctx context.Context, id string) error {
	c, err := r.load(id)
	if err != nil {
		return err
	}
	return classify(c.Resume())
}

// Update implements driver.Updater.
func (r *Runtime) Update(ctx context.Context, id string, res *driver.Resources) error {
	c, err := r.load(id)
	if err != nil {
		return err
	}
	cfg := c.Config()
	cg := *cfg.Cgroups
	rs := *cg.Resources
	if res.MemoryLimit != nil {
		rs.Memory = *res.MemoryLimit
	}
	if res.CPUShares != nil {
		rs.CpuShares = *res.CPUShares
	}
	if res.CPUQuota != nil {
		rs.CpuQuota = *res.CPUQuota
	}
	if res.CPUPeriod != nil {
		rs.CpuPeriod = *res.CPUPeriod
	}
	if res.PidsLimit != nil {
		rs.PidsLimit = res.PidsLimit
	}
	cg.Resources = &rs
	cfg.Cgroups = &cg
	return classify(c.Set(cfg))
}

// Stats implements driver.StatsReader.
func (r *Runtime) Stats(ctx context.Context, id string) (*driver.Stats, error) {
	c, err := r.load(id)
	if err != nil {
		return nil, err
	}
	s, err := c.Stats()
	if err != nil {
		return nil, classify(err)
	}
	out := &driver.Stats{Time: time.Now().UTC()}
	if cs := s.CgroupStats; cs != nil {
		out.MemoryUsage = cs.MemoryStats.Usage.Usage
		if l := cs.MemoryStats.Usage.Limit; l < 1<<62 {
			out.MemoryLimit = l
		}
		out.CPUUsageNanos = cs.CpuStats.CpuUsage.TotalUsage
		out.Pids = cs.PidsStats.Current
		out.PidsLimit = cs.PidsStats.Limit
	}
	return out, nil
}

// Logs implements driver.Logger: the container's log, its rotated files
// first.
func (r *Runtime) Logs(ctx context.Context, id string) (io.ReadCloser, error) {
	if _, err := r.readRecord(id); err != nil {
		return nil, err
	}
	rc, err := logfile.Open(filepath.Join(r.dir(id), logFile))
	if errors.Is(err, os.ErrNotExist) {
		// A container of an older berth, whose output went to its
		// caller's writers alone.
		return nil, fmt.Errorf("no log kept for this container: %w", errdefs.ErrFailedPrecondition)
	}
	return rc, err
}

// FollowLogs implements driver.LogFollower: the log's files are read as
// they grow and rotate, until Wait says the container stopped and its
// output was copied (from any process on the same root).
func (r *Runtime) FollowLogs(ctx context.Context, id string, tail int, w io.Writer) error {
	if _, err := r.readRecord(id); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		// A failed Wait (the container was deleted meanwhile) ends
		// the follow as well.
		_, _ = r.Wait(ctx, id)
		close(done)
	}()
	err := logfile.Follow(ctx, filepath.Join(r.dir(id), logFile), tail, w, done)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no log kept for this container: %w", errdefs.ErrFailedPrecondition)
	}
	return err
}

// logLimits are the log's caps, the defaults where the request has none.
func logLimits(l driver.LogLimits) logfile.Limits {
	return logfile.Limits{MaxSize: l.MaxSize, MaxFiles: l.MaxFiles}.OrDefault()
}

// killRemaining kills whatever is left in the container's cgroup once its
// init is gone. libcontainer takes a container whose init's main thread
// has exited for stopped even while the init's other threads live on (a
// tenant's process can end its leader thread alone), then cannot remove
// its cgroup: the container could never be deleted.
func killRemaining(ctx context.Context, c *lc.Container) error {
	return reap.KillAll(ctx, c.Processes)
}
