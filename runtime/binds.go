package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/internal/kernfs"
)

// checkHostPaths refuses a root filesystem or bind source on a kernel
// interface filesystem (proc, sysfs, cgroup, devtmpfs...), or one that
// would carry such a mount into the container (recursive binds, the root
// filesystem). Each source is resolved once, opened without following
// links and checked on the opened file; bind sources are replaced by what
// they resolved to, so the backend binds the path that was checked. No
// policy switch admits these: through them a container reaches the host's
// devices (a devices cgroup it can write, a /dev it can read).
func checkHostPaths(id string, s *specs.Spec) error {
	bad := func(what, path string, err error) error {
		if errors.Is(err, kernfs.ErrKernelInterface) {
			return fmt.Errorf("container %q: %s %s: %v: %w", id, what, path, err, errdefs.ErrInvalidArgument)
		}
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("container %q: %s %s: %v: %w", id, what, path, err, errdefs.ErrNotFound)
		}
		return fmt.Errorf("container %q: %s %s: %v: %w", id, what, path, err, errdefs.ErrInvalidArgument)
	}
	if s.Root != nil && s.Root.Path != "" {
		if _, err := checkHostPath(s.Root.Path, true); err != nil {
			return bad("root filesystem", s.Root.Path, err)
		}
	}
	for i, m := range s.Mounts {
		if !isBindMount(m) {
			continue
		}
		real, err := checkHostPath(m.Source, slices.Contains(m.Options, "rbind"))
		if err != nil {
			return bad("bind source", m.Source, err)
		}
		s.Mounts[i].Source = real
	}
	return nil
}

// checkHostPath resolves path, opens what it names and checks it, and with
// recursive the mounts below it. It returns the resolved path.
func checkHostPath(path string, recursive bool) (string, error) {
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("not an absolute path")
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", err
	}
	f, err := kernfs.Open(real)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if recursive {
		if err := kernfs.CheckUnder(real); err != nil {
			return "", err
		}
	}
	return real, nil
}

func isBindMount(m specs.Mount) bool {
	return m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
}
