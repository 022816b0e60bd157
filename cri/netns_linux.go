package cri

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/runtime"
)

// pinNetNS bind-mounts the network namespace of infra's init on dst, a
// file in the pod's directory: the pod's network is then set up and torn
// down in that namespace whatever becomes of the init and of its PID (a
// /proc/PID path could name another process's namespace once the PID is
// reused).
func pinNetNS(ctx context.Context, infra *runtime.Container, dst string) (string, error) {
	path, err := infra.NamespacePath(ctx, specs.NetworkNamespace)
	if err != nil {
		return "", err
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("network namespace %s: %w", path, err)
	}
	defer unix.Close(fd)
	// The descriptor is the namespace of the PID the path named when it
	// was opened; if the infra still has that PID now, it is its.
	again, err := infra.NamespacePath(ctx, specs.NetworkNamespace)
	if err != nil {
		return "", err
	}
	if again != path {
		return "", fmt.Errorf("the pod's infra process changed while its network namespace was opened: %w", errdefs.ErrAborted)
	}
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return "", err
	}
	f.Close()
	if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", fd), dst, "", unix.MS_BIND, ""); err != nil {
		os.Remove(dst)
		return "", fmt.Errorf("pin network namespace on %s: %w", dst, err)
	}
	return dst, nil
}

// unpinNetNS undoes pinNetNS; a pin that is not there is undone already.
func unpinNetNS(dst string) error {
	if _, err := os.Lstat(dst); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := fsutil.Unmount(dst); err != nil {
		return fmt.Errorf("unpin network namespace %s: %w", dst, err)
	}
	return os.Remove(dst)
}
