package idmap

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// UsernsFD returns an open file for a new user namespace with the given
// mappings. It starts a child in that namespace that stops at its exec
// (ptraced) before running any code, opens its namespace and kills it.
func UsernsFD(uidMap, gidMap []specs.LinuxIDMapping) (*os.File, error) {
	// The tracer is the thread that forks: keep this goroutine on it
	// until the child is reaped, as os/exec asks of Ptrace.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.Command("/proc/self/exe")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: toSys(uidMap),
		GidMappings: toSys(gidMap),
		Ptrace:      true,
		Pdeathsig:   syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("spawn user namespace holder: %w", err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid))
	if err != nil {
		return nil, fmt.Errorf("open user namespace: %w", err)
	}
	return f, nil
}

// DetachedBind clones src recursively as a mount attached nowhere yet
// (open_tree), with attr applied (mount_setattr) and, when usernsFD >= 0,
// ID-mapped through that user namespace. The caller closes the returned
// descriptor, or moves the mount with move_mount.
func DetachedBind(src string, attr unix.MountAttr, usernsFD int) (int, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return -1, fmt.Errorf("open_tree %s: %w", src, err)
	}
	what := "mount_setattr"
	if usernsFD >= 0 {
		attr.Attr_set |= unix.MOUNT_ATTR_IDMAP
		attr.Userns_fd = uint64(usernsFD)
		what = "idmap"
	}
	if attr != (unix.MountAttr{}) {
		if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
			unix.Close(fd)
			if usernsFD >= 0 {
				return -1, fmt.Errorf("%s %s (the filesystem must support ID-mapped mounts): %w", what, src, err)
			}
			return -1, fmt.Errorf("%s %s: %w", what, src, err)
		}
	}
	return fd, nil
}

func toSys(m []specs.LinuxIDMapping) []syscall.SysProcIDMap {
	out := make([]syscall.SysProcIDMap, 0, len(m))
	for _, e := range m {
		out = append(out, syscall.SysProcIDMap{ContainerID: int(e.ContainerID), HostID: int(e.HostID), Size: int(e.Size)})
	}
	return out
}

// BindMount mounts src recursively at dst (an existing directory), with
// owners mapped through uidMap and gidMap: host ID h appears as the host ID
// that the namespace's container ID h maps to.
func BindMount(src, dst string, uidMap, gidMap []specs.LinuxIDMapping) error {
	userns, err := UsernsFD(uidMap, gidMap)
	if err != nil {
		return err
	}
	defer userns.Close()
	fd, err := DetachedBind(src, unix.MountAttr{}, int(userns.Fd()))
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount %s: %w", dst, err)
	}
	return nil
}
