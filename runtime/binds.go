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

// checkHostPaths refuses a root filesystem on a kernel interface
// filesystem (proc, sysfs, cgroup, devtmpfs...), or holding one below it
// (the engines bind the root filesystem recursively): resolved once,
// opened without following links and checked on the opened file. No
// policy switch admits it: through it a container reaches the host's
// devices (a devices cgroup it can write, a /dev it can read). Bind
// mounts go through the volume manager (attachBinds), which checks their
// sources the same way.
func checkHostPaths(id string, s *specs.Spec) error {
	if s.Root == nil || s.Root.Path == "" {
		return nil
	}
	if err := checkRootfs(s.Root.Path); err != nil {
		var class error = errdefs.ErrInvalidArgument
		if errors.Is(err, os.ErrNotExist) {
			class = errdefs.ErrNotFound
		}
		return fmt.Errorf("container %q: root filesystem %s: %v: %w", id, s.Root.Path, err, class)
	}
	return nil
}

// checkRootfs resolves path, opens what it names and checks it, and the
// mounts below it.
func checkRootfs(path string) error {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return err
	}
	f, err := kernfs.Open(real)
	if err != nil {
		return err
	}
	defer f.Close()
	return kernfs.CheckUnder(real)
}

func isBindMount(m specs.Mount) bool {
	return m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
}
