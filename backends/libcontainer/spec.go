package libcontainer

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	lc "github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/configs/validate"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/errclass"
	"github.com/berthrun/berth/runtime/driver"
)

// rlimits maps the OCI names berth accepts to the kernel's resources.
var rlimits = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE, "RLIMIT_NICE": unix.RLIMIT_NICE,
	"RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME, "RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_STACK": unix.RLIMIT_STACK,
}

// cgroupsPathOf is the cgroup of container id: the spec's, or parent/id.
func cgroupsPathOf(id, parent string, spec *specs.Spec) string {
	if spec.Linux != nil && spec.Linux.CgroupsPath != "" {
		return spec.Linux.CgroupsPath
	}
	return "/" + filepath.Join(parent, id)
}

// nativeConfig turns a checked OCI spec into libcontainer's config, with the
// root filesystem at rootfs and the cgroup under parent/id.
func nativeConfig(id, parent string, spec *specs.Spec, rootfs string) (*configs.Config, error) {
	s := *spec
	s.Root = &specs.Root{Path: rootfs, Readonly: spec.Root.Readonly}
	l := *spec.Linux
	l.CgroupsPath = cgroupsPathOf(id, parent, spec)
	if driver.UnfilteredSeccomp(l.Seccomp) {
		// No filter at all: given the profile, libcontainer would
		// install one that allows everything (Seccomp: 2).
		l.Seccomp = nil
	}
	if l.RootfsPropagation == "" && hasSharedBind(spec) {
		// runc makes every mount of the container's namespace a slave
		// by default, before it binds: the bind would be a slave of the
		// source's peers, receiving their mounts but giving none back.
		// Kept shared (runc still makes the root filesystem's own mount
		// private, so the container's other mounts reach nobody), the
		// bind joins the source's peers.
		l.RootfsPropagation = "rshared"
	}
	s.Linux = &l
	cfg, err := convertSpec(id, &s)
	if err != nil {
		return nil, fmt.Errorf("spec: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if s.Process != nil {
		for _, r := range s.Process.Rlimits {
			k, ok := rlimits[r.Type]
			if !ok {
				return nil, fmt.Errorf("spec: unknown rlimit %q: %w", r.Type, errdefs.ErrInvalidArgument)
			}
			cfg.Rlimits = append(cfg.Rlimits, configs.Rlimit{Type: k, Hard: r.Hard, Soft: r.Soft})
		}
	}
	if err := validate.Validate(cfg); err != nil {
		return nil, fmt.Errorf("spec: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return cfg, nil
}

// hasSharedBind reports whether a bind mount of spec has shared
// propagation: the last of its propagation options is shared or rshared.
func hasSharedBind(spec *specs.Spec) bool {
	for _, m := range spec.Mounts {
		prop := ""
		for _, o := range m.Options {
			switch o {
			case "private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable", "runbindable":
				prop = strings.TrimPrefix(o, "r")
			}
		}
		if prop == "shared" && (m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")) {
			return true
		}
	}
	return false
}

// specconvMu serializes specconv, which is not safe for concurrent use: it
// puts pointers to its global AllowedDevices into the config and, for a user
// namespace, sets their owner in place (runc v1.5.3, specconv
// setupUserNamespace). Left alone, concurrent creates race, and a container
// without a user namespace created after one with it gets device nodes owned
// by the other's mapped root.
var specconvMu sync.Mutex

func convertSpec(id string, s *specs.Spec) (*configs.Config, error) {
	specconvMu.Lock()
	defer specconvMu.Unlock()
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{CgroupName: id, Spec: s})
	if err == nil {
		for i, d := range cfg.Devices {
			own := *d // keeps the owner set for this container
			cfg.Devices[i] = &own
		}
	}
	for _, d := range specconv.AllowedDevices {
		d.Uid, d.Gid = 0, 0
	}
	return cfg, err
}

// nativeProcess turns an OCI process into a libcontainer one.
func nativeProcess(p *specs.Process, init bool) *lc.Process {
	np := &lc.Process{
		Args: p.Args,
		Env:  p.Env,
		Cwd:  p.Cwd,
		UID:  int(p.User.UID),
		GID:  int(p.User.GID),
		Init: init,
	}
	if p.Terminal && p.ConsoleSize != nil {
		// Checked to fit (boxSize).
		np.ConsoleHeight, np.ConsoleWidth = uint16(p.ConsoleSize.Height), uint16(p.ConsoleSize.Width)
	}
	for _, g := range p.User.AdditionalGids {
		np.AdditionalGroups = append(np.AdditionalGroups, int(g))
	}
	if np.Cwd == "" {
		np.Cwd = "/"
	}
	return np
}

// classify gives libcontainer's errors their errdefs class.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errclass.Has(err):
		return err
	case errclass.OSClass(err) != nil:
		return errclass.OS(err)
	case errors.Is(err, lc.ErrNotExist):
		return fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
	case errors.Is(err, lc.ErrExist):
		return fmt.Errorf("%w: %w", err, errdefs.ErrAlreadyExists)
	case errors.Is(err, lc.ErrNotRunning), errors.Is(err, lc.ErrNotPaused), errors.Is(err, lc.ErrRunning), errors.Is(err, lc.ErrPaused):
		return fmt.Errorf("%w: %w", err, errdefs.ErrFailedPrecondition)
	}
	msg := err.Error()
	switch {
	// The init reports its failures as text through a pipe: a missing
	// program or working directory is the caller's mistake.
	case strings.Contains(msg, "executable file not found"),
		strings.Contains(msg, "no such file or directory") && (strings.Contains(msg, "exec") || strings.Contains(msg, "chdir to cwd")):
		return fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	case strings.Contains(msg, "device or resource busy"),
		// A mount whose destination in the root filesystem is of the
		// other kind (a device bound where the image has a directory).
		strings.Contains(msg, "not a directory"), strings.Contains(msg, "is a directory"):
		return fmt.Errorf("%w: %w", err, errdefs.ErrFailedPrecondition)
	}
	return fmt.Errorf("%w: %w", err, errdefs.ErrUnknown)
}
