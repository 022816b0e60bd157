package libcontainer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/containerd/errdefs"
	lc "github.com/opencontainers/runc/libcontainer"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/internal/reap"
	"github.com/berthrun/berth/runtime/driver"
)

// A container's namespaces are its init's, reached through /proc/<pid>.
// A pid names a process only while it lives: once the init exits, another
// process (a tenant's, say) may take its pid. So the init's /proc
// directory is opened first, then checked against the start time
// libcontainer recorded for the init; the directory's descriptor reaches
// that process only, and every lookup through it fails once the process
// has exited, whoever has the pid by then. A namespace is opened through
// it, and must be the one the init was created with (its inode, recorded
// at create before anything of the tenant ran): an init that moved to
// another namespace since is not followed there.

// nsNames maps the OCI namespace types to their names under
// /proc/<pid>/ns.
var nsNames = map[specs.LinuxNamespaceType]string{
	specs.NetworkNamespace: "net", specs.IPCNamespace: "ipc", specs.UTSNamespace: "uts",
	specs.PIDNamespace: "pid", specs.UserNamespace: "user", specs.MountNamespace: "mnt",
	specs.CgroupNamespace: "cgroup", specs.TimeNamespace: "time",
}

// initProc is a descriptor of a live init's /proc directory, checked to
// be that init's.
type initProc struct {
	fd  int
	pid int
}

// openInitProc opens /proc/<pid> and checks that it is the process that
// started at start (clock ticks since boot, as libcontainer records it).
func openInitProc(pid int, start uint64) (*initProc, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("the container has no init: %w", errdefs.ErrFailedPrecondition)
	}
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, initGone(err)
	}
	p := &initProc{fd: fd, pid: pid}
	b, err := p.read("stat")
	if err != nil {
		p.Close()
		return nil, err
	}
	got, err := statStartTime(b)
	if err != nil {
		p.Close()
		return nil, err
	}
	if got != start {
		p.Close()
		return nil, fmt.Errorf("the container's init has exited (pid %d is another process's now): %w", pid, errdefs.ErrFailedPrecondition)
	}
	return p, nil
}

// initGone classes the failure of a lookup under the init's /proc
// directory: the init has exited.
func initGone(err error) error {
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("the container's init has exited: %v: %w", err, errdefs.ErrFailedPrecondition)
	}
	return err
}

// procStartTime is process pid's start time, as statStartTime reads it.
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return statStartTime(b)
}

// statStartTime reads the start time (field 22) of a /proc/<pid>/stat.
func statStartTime(stat []byte) (uint64, error) {
	f, err := reap.StatFields(stat)
	if err != nil {
		return 0, err
	}
	if len(f) < 20 {
		return 0, fmt.Errorf("malformed /proc stat %q", stat)
	}
	return strconv.ParseUint(string(f[19]), 10, 64) // field 22, counted from field 3
}

// read reads a file of the init's /proc directory.
func (p *initProc) read(name string) ([]byte, error) {
	fd, err := unix.Openat(p.fd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, initGone(err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<16))
	if err != nil {
		return nil, initGone(err)
	}
	return b, nil
}

// namespace opens the init's namespace of type typ.
func (p *initProc) namespace(typ specs.LinuxNamespaceType) (*os.File, error) {
	name, ok := nsNames[typ]
	if !ok {
		return nil, fmt.Errorf("unknown namespace type %q: %w", typ, errdefs.ErrInvalidArgument)
	}
	fd, err := unix.Openat(p.fd, "ns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, initGone(err)
	}
	return os.NewFile(uintptr(fd), fmt.Sprintf("/proc/%d/ns/%s", p.pid, name)), nil
}

// Close lets go of the directory.
func (p *initProc) Close() { unix.Close(p.fd) }

// nsInode is the inode that identifies the namespace f holds.
func nsInode(f *os.File) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// openInit opens the /proc directory of container id's init, which must
// be created, running or paused.
func (r *Runtime) openInit(id string) (*initProc, error) {
	c, err := r.load(id)
	if err != nil {
		return nil, err
	}
	st, err := c.Status()
	if err != nil {
		return nil, classify(err)
	}
	if st != lc.Created && st != lc.Running && st != lc.Paused {
		return nil, fmt.Errorf("container is %s: %w", st, errdefs.ErrFailedPrecondition)
	}
	s, err := c.State()
	if err != nil {
		return nil, classify(err)
	}
	return openInitProc(s.InitProcessPid, s.InitProcessStartTime)
}

// namespaceOf opens the namespace of type typ of the init p of container
// id, refusing one the init was not created with.
func (r *Runtime) namespaceOf(id string, p *initProc, typ specs.LinuxNamespaceType) (*os.File, error) {
	f, err := p.namespace(typ)
	if err != nil {
		return nil, err
	}
	var created map[string]uint64
	err = fsutil.ReadJSON(filepath.Join(r.dir(id), nsFile), &created)
	if errors.Is(err, os.ErrNotExist) {
		err = fmt.Errorf("the container's namespaces were not recorded when it was created (an older berth made it, or its create was cut short): %w", errdefs.ErrFailedPrecondition)
	}
	if err == nil {
		want, ok := created[nsNames[typ]]
		got, ierr := nsInode(f)
		switch {
		case ierr != nil:
			err = ierr
		case !ok || got != want:
			err = fmt.Errorf("the container's init is no longer in the %s namespace it was created with: %w", typ, errdefs.ErrFailedPrecondition)
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// OpenNamespace implements driver.NamespaceOpener.
func (r *Runtime) OpenNamespace(ctx context.Context, id string, typ specs.LinuxNamespaceType) (*os.File, string, error) {
	p, err := r.openInit(id)
	if err != nil {
		return nil, "", err
	}
	defer p.Close()
	f, err := r.namespaceOf(id, p, typ)
	if err != nil {
		return nil, "", err
	}
	return f, f.Name(), nil
}

// nsFile, in a container's directory, records the inode of each namespace
// of its init as it was created, by their names under /proc/<pid>/ns.
// It is written without waiting for the disk: it means nothing once the
// init is gone, as it is after the host's crash.
const nsFile = "namespaces.json"

// recordNamespaces records the namespaces of the new container's init,
// before anything of the tenant runs in it: what OpenNamespace and joins
// hold it to.
func (r *Runtime) recordNamespaces(id string, pid int, start uint64) error {
	var p *initProc
	var err error
	if pid > 0 && start > 0 {
		// The init whoever started it named (no state to load).
		p, err = openInitProc(pid, start)
	} else {
		p, err = r.openInit(id)
	}
	if err != nil {
		return err
	}
	defer p.Close()
	created := map[string]uint64{}
	for _, name := range nsNames {
		var st unix.Stat_t
		if err := unix.Fstatat(p.fd, "ns/"+name, &st, 0); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // a namespace this kernel does not have (time)
			}
			return initGone(err)
		}
		created[name] = st.Ino
	}
	return fsutil.WriteJSONVolatile(filepath.Join(r.dir(id), nsFile), created)
}

// joined are the namespaces a new container joins (CreateRequest.Join),
// open: the new init joins these very ones.
type joined map[specs.LinuxNamespaceType]*os.File

func (j joined) close() {
	for _, f := range j {
		f.Close()
	}
}

// openJoins opens the namespaces req joins, each its container's as its
// init was created with. A joined user namespace must map IDs as req's
// spec says (the runtime gave it the other's mappings): the root
// filesystem and volumes are ID-mapped for them.
func (r *Runtime) openJoins(req *driver.CreateRequest) (j joined, err error) {
	j = joined{}
	defer func() {
		if err != nil {
			j.close()
		}
	}()
	for typ, id := range req.Join {
		p, err := r.openInit(id)
		if err != nil {
			return nil, fmt.Errorf("join %s of container %q: %w", typ, id, err)
		}
		f, err := r.namespaceOf(id, p, typ)
		if err == nil && typ == specs.UserNamespace {
			err = checkIDMaps(p, req.Spec)
		}
		p.Close()
		if err != nil {
			if f != nil {
				f.Close()
			}
			return nil, fmt.Errorf("join %s of container %q: %w", typ, id, err)
		}
		j[typ] = f
	}
	return j, nil
}

// checkIDMaps checks that the init p's user namespace maps IDs as spec's
// mappings say.
func checkIDMaps(p *initProc, spec *specs.Spec) error {
	for _, m := range []struct {
		file string
		want []specs.LinuxIDMapping
	}{{"uid_map", spec.Linux.UIDMappings}, {"gid_map", spec.Linux.GIDMappings}} {
		b, err := p.read(m.file)
		if err != nil {
			return err
		}
		var got []specs.LinuxIDMapping
		for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
			f := bytes.Fields(line)
			if len(f) != 3 {
				return fmt.Errorf("malformed %s %q", m.file, b)
			}
			var v [3]uint32
			for i := range v {
				n, err := strconv.ParseUint(string(f[i]), 10, 32)
				if err != nil {
					return fmt.Errorf("malformed %s %q", m.file, b)
				}
				v[i] = uint32(n)
			}
			got = append(got, specs.LinuxIDMapping{ContainerID: v[0], HostID: v[1], Size: v[2]})
		}
		if !slices.Equal(got, m.want) {
			return fmt.Errorf("its user namespace's %s is %v, not the %v it was given: %w", m.file, got, m.want, errdefs.ErrFailedPrecondition)
		}
	}
	return nil
}

// joinedSpec is spec as libcontainer takes it with the namespaces of j:
// each joined by a path to this process's own descriptor, which the new
// init opens while this process holds it (until Create returns), so it
// joins the namespace opened and checked here, whatever becomes of the
// other container meanwhile. A joined user namespace brings its own
// mappings: libcontainer reads them there (and would refuse both).
func joinedSpec(spec *specs.Spec, j joined) *specs.Spec {
	if len(j) == 0 {
		return spec
	}
	s := *spec
	l := *spec.Linux
	l.Namespaces = slices.Clone(l.Namespaces)
	for i, ns := range l.Namespaces {
		if f, ok := j[ns.Type]; ok {
			l.Namespaces[i].Path = fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd())
		}
	}
	if _, ok := j[specs.UserNamespace]; ok {
		l.UIDMappings, l.GIDMappings = nil, nil
	}
	s.Linux = &l
	return &s
}
