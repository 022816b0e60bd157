package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/runtime/driver"
	"github.com/berthrun/berth/volume"
)

// Cold move. On a backend with root disks (Capabilities.RootDisk) a
// stopped or created container can leave one runtime as a directory
// holding its disk and its config, and come back on another state
// directory (or host) with Import. The format is the one the parallels
// backend's Export wrote: ExportConfigFile naming a disk file beside it.

// ExportConfigFile is the config Export writes in its directory.
const ExportConfigFile = "container.json"

// exportDiskFile is the disk Export writes beside its config.
const exportDiskFile = "disk.img"

// maxExportConfig bounds the config Import reads.
const maxExportConfig = 4 << 20

// exported is the config of an export directory.
type exported struct {
	// Spec is the container's spec without its root path, its volumes,
	// user namespace or ID mappings, which the importing runtime gives it.
	Spec          *specs.Spec       `json:"spec"`
	UserNamespace bool              `json:"user_namespace,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	// Disk is the image file's name in the export directory.
	Disk string `json:"disk"`
}

// Export writes the stopped (or never started) container's root disk and
// config to dir (made if missing; files already there are not replaced:
// already-exists), for a cold move: delete the container here, carry dir
// anywhere, and Import it. A running or paused container is refused with
// failed-precondition; a backend without root disks with not-implemented.
// The container's volumes are not part of the move: the importer attaches
// its own (ImportOptions.Volumes).
func (c *Container) Export(ctx context.Context, dir string) (retErr error) {
	if err := c.capable("export", c.r.disks != nil); err != nil {
		return err
	}
	i, err := c.require(ctx, "export", StatusCreated, StatusStopped)
	if err != nil {
		return err
	}
	spec, err := exportSpec(i.Spec, c.volumeSpecs())
	if err != nil {
		return wrap(c.id, err)
	}
	exp := exported{Labels: i.Labels, Disk: exportDiskFile, Spec: spec}
	exp.UserNamespace = driver.HasUserNamespace(i.Spec)
	b, err := json.MarshalIndent(exp, "", "\t")
	if err != nil {
		return wrap(c.id, err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return wrap(c.id, err)
	}
	disk, config := filepath.Join(dir, exp.Disk), filepath.Join(dir, ExportConfigFile)
	f, err := os.OpenFile(config, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return wrap(c.id, existClass(err))
	}
	defer func() {
		if retErr != nil {
			_ = os.Remove(config)
		}
	}()
	_, err = f.Write(append(b, '\n'))
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return wrap(c.id, err)
	}
	// The backend copies the disk into a new file (O_EXCL): never
	// through a link planted in dir.
	return wrap(c.id, existClass(c.r.copyRootDisk(ctx, c.id, disk)))
}

func existClass(err error) error {
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%w: %w", err, errdefs.ErrAlreadyExists)
	}
	return err
}

// exportSpec is the container's spec as another runtime takes it: its
// root, user namespace, ID mappings and volumes are the new runtime's.
func exportSpec(s *specs.Spec, vols []volume.Spec) (*specs.Spec, error) {
	spec, err := cloneSpec(s)
	if err != nil {
		return nil, err
	}
	spec.Root = nil
	if s.Root != nil && s.Root.Readonly {
		spec.Root = &specs.Root{Readonly: true}
	}
	isVolume := func(dst string) bool {
		return slices.ContainsFunc(vols, func(v volume.Spec) bool { return filepath.Clean(v.Destination) == filepath.Clean(dst) })
	}
	// Binds are host paths: the importer's to give (ImportOptions.Volumes),
	// and refused in an export's spec.
	spec.Mounts = slices.DeleteFunc(spec.Mounts, func(m specs.Mount) bool { return isVolume(m.Destination) || isBindMount(m) })
	if l := spec.Linux; l != nil {
		l.UIDMappings, l.GIDMappings = nil, nil
		l.Namespaces = slices.DeleteFunc(l.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.UserNamespace })
		l.Devices = slices.DeleteFunc(l.Devices, func(d specs.LinuxDevice) bool { return isVolume(d.Path) })
	}
	return spec, nil
}

// ImportOptions tune Import.
type ImportOptions struct {
	// IO connects the container's standard streams, as Config.IO.
	IO IO
	// Volumes are attached as Config.Volumes: volumes are not moved.
	Volumes []volume.Spec
}

// Import creates container id from what Export wrote in dir, on a backend
// with root disks (not-implemented otherwise). The disk goes through the
// runtime's volume policy like any root disk, and moves into the state
// directory: once the container exists it is gone from dir (a refused
// import leaves dir as it was). A config or disk that is not a regular
// file of dir itself (a link, a FIFO, a path elsewhere), or a spec that
// binds host paths (Export writes none: the importer gives its own in
// ImportOptions.Volumes), is refused with invalid-argument, and nothing is
// left behind.
func (r *Runtime) Import(ctx context.Context, id, dir string, opts ImportOptions) (*Container, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	if r.disks == nil {
		return nil, fmt.Errorf("container %q: import: the backend has no root disks: %w", id, errdefs.ErrNotImplemented)
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("container %q: export %s: %s: %w", id, dir, fmt.Sprintf(format, a...), errdefs.ErrInvalidArgument)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, bad("%v", err)
	}
	dfd, err := unix.Open(abs, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("container %q: export %s: %w", id, dir, errdefs.ErrNotFound)
		}
		return nil, bad("%v", err)
	}
	defer unix.Close(dfd)
	exp, err := readExport(dfd)
	if err != nil {
		return nil, bad("%v", err)
	}
	if err := checkExported(exp); err != nil {
		return nil, bad("%v", err)
	}
	disk, err := openDiskFile(dfd, exp.Disk)
	if err != nil {
		return nil, bad("%v", err)
	}
	defer disk.Close()
	cfg := &Config{Spec: exp.Spec, RootDisk: filepath.Join(abs, exp.Disk), UserNamespace: exp.UserNamespace,
		Labels: exp.Labels, IO: opts.IO, Volumes: opts.Volumes}
	c, err := r.create(ctx, id, cfg, disk)
	if err != nil {
		return nil, err
	}
	dropAdopted(dfd, exp.Disk, disk)
	return c, nil
}

// dropAdopted removes the name of an adopted disk (the disk moved), if
// the name in the directory dfd still is the file adopted: a name swapped
// meanwhile is left alone.
func dropAdopted(dfd int, name string, disk *os.File) {
	var was, now unix.Stat_t
	if unix.Fstat(int(disk.Fd()), &was) == nil && unix.Fstatat(dfd, name, &now, unix.AT_SYMLINK_NOFOLLOW) == nil &&
		was.Dev == now.Dev && was.Ino == now.Ino {
		_ = unix.Unlinkat(dfd, name, 0)
	}
}

// checkExported refuses an exported config Export would not have
// written: no spec, a disk that is no file of the directory, a root
// filesystem path, binds.
func checkExported(exp *exported) error {
	if exp.Spec == nil {
		return fmt.Errorf("no spec")
	}
	if exp.Disk == "" || exp.Disk == "." || exp.Disk == ".." || strings.ContainsRune(exp.Disk, '/') {
		return fmt.Errorf("disk %q is not a file of the directory", exp.Disk)
	}
	if exp.Spec.Root != nil && exp.Spec.Root.Path != "" {
		return fmt.Errorf("the spec names a root filesystem %q", exp.Spec.Root.Path)
	}
	// Export writes no bind: one in the spec was crafted to hand the
	// container host files the importer never named.
	for _, m := range exp.Spec.Mounts {
		if isBindMount(m) {
			return fmt.Errorf("the spec binds the host's %s at %s (host paths are the importer's to give, in ImportOptions.Volumes)", m.Source, m.Destination)
		}
	}
	return nil
}

// readExport reads the config of the export directory open as dfd: a
// regular file, never through a link.
func readExport(dfd int) (*exported, error) {
	fd, err := unix.Openat(dfd, ExportConfigFile, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", ExportConfigFile, err)
	}
	f := os.NewFile(uintptr(fd), ExportConfigFile)
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", ExportConfigFile)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxExportConfig+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxExportConfig {
		return nil, fmt.Errorf("%s is larger than %d bytes", ExportConfigFile, maxExportConfig)
	}
	var exp exported
	if err := json.Unmarshal(b, &exp); err != nil {
		return nil, fmt.Errorf("%s: %v", ExportConfigFile, err)
	}
	return &exp, nil
}
