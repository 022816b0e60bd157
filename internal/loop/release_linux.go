package loop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Free lets go of the loop device at path if it is still bound to the file
// with device dev and inode ino, and reports whether it no longer is.
//
// It sets the device to clear at its last close (LOOP_CLR_FD) and closes
// it. A filesystem mounted from the device, in any mount namespace, holds
// it open, as does any process that opened it: the device is freed there
// and then if none does, and otherwise when the last of them lets go,
// whether or not anyone waits for it. A device bound to another file is
// not touched (it is not, or no longer, the caller's).
func Free(path string, dev, ino uint64) (bool, error) {
	if !bound(path) {
		return true, nil
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return true, nil
	case errors.Is(err, unix.ENXIO):
		return false, nil // being cleared by its last close right now
	case err != nil:
		return false, fmt.Errorf("open %s: %w", path, err)
	}
	info, err := unix.IoctlLoopGetStatus64(fd)
	if err != nil || info.Device != dev || info.Inode != ino {
		unix.Close(fd)
		if err != nil && !errors.Is(err, unix.ENXIO) {
			return false, fmt.Errorf("LOOP_GET_STATUS64 %s: %w", path, err)
		}
		return true, nil // unbound, or bound to another file
	}
	// If this is the only opener, the kernel also refuses new openers from
	// here on, so the close below frees the device.
	err = unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0)
	unix.Close(fd)
	if err != nil && !errors.Is(err, unix.ENXIO) {
		return false, fmt.Errorf("LOOP_CLR_FD %s: %w", path, err)
	}
	return !bound(path), nil
}

// bound reports whether the loop device at path has a backing file, from
// sysfs, without opening the device.
func bound(path string) bool {
	_, err := os.Stat(filepath.Join("/sys/block", filepath.Base(path), "loop"))
	return err == nil
}

// Watcher receives the kernel's device events (uevents). A loop device
// announces each change of its binding with one, including the clear at its
// last close, so a caller that opened a Watcher before looking at a device
// learns of every later change without polling.
type Watcher struct {
	f *os.File
}

// Watch starts receiving device events.
func Watch() (*Watcher, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("uevent socket: %w", err)
	}
	// Group 1 carries the kernel's own events (udev's are group 2).
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("uevent socket: %w", err)
	}
	// Room for bursts on a busy host; an overflow is still handled (Wait
	// returns and the caller looks again).
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	return &Watcher{f: os.NewFile(uintptr(fd), "uevent")}, nil
}

// Close stops receiving events.
func (w *Watcher) Close() error { return w.f.Close() }

// Wait returns nil once an event about the device at path arrived since the
// last Wait, or events were lost (either way the caller looks again), and
// ctx's error once ctx is done first.
func (w *Watcher) Wait(ctx context.Context, path string) error {
	suffix := []byte("/block/" + filepath.Base(path))
	if err := w.f.SetReadDeadline(time.Time{}); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = w.f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, 16<<10)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, unix.ENOBUFS) {
				return nil
			}
			return fmt.Errorf("uevent: %w", err)
		}
		// An event starts with "action@devpath" and a NUL.
		head, _, _ := bytes.Cut(buf[:n], []byte{0})
		if bytes.HasSuffix(head, suffix) {
			return nil
		}
	}
}

// Holders describes who keeps the device at path: processes whose mount
// namespace has a filesystem of it mounted, and processes that have it open.
// It is for error messages; what it finds may be gone by the time it
// returns.
func Holders(path string) []string {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil
	}
	devField := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	var out []string
	seen := map[string]bool{}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid := p.Name()
		if pid[0] < '0' || pid[0] > '9' {
			continue
		}
		comm, _ := os.ReadFile(filepath.Join("/proc", pid, "comm"))
		name := strings.TrimSpace(string(comm))
		// Threads can sit in other mount namespaces than their process
		// (one that joined a container's and stayed): look at each.
		tasks, _ := os.ReadDir(filepath.Join("/proc", pid, "task"))
		for _, t := range tasks {
			tdir := filepath.Join("/proc", pid, "task", t.Name())
			ns, err := os.Readlink(filepath.Join(tdir, "ns", "mnt"))
			if err != nil || seen[ns] {
				continue
			}
			seen[ns] = true
			mi, _ := os.ReadFile(filepath.Join(tdir, "mountinfo"))
			for _, l := range strings.Split(string(mi), "\n") {
				if f := strings.Fields(l); len(f) > 4 && f[2] == devField {
					who := "pid " + pid
					if t.Name() != pid {
						who += " (thread " + t.Name() + ")"
					}
					out = append(out, fmt.Sprintf("%s %s has it mounted at %s in %s", who, name, f[4], ns))
				}
			}
		}
		fds, _ := os.ReadDir(filepath.Join("/proc", pid, "fd"))
		for _, fd := range fds {
			var fst unix.Stat_t
			if unix.Stat(filepath.Join("/proc", pid, "fd", fd.Name()), &fst) == nil &&
				fst.Mode&unix.S_IFMT == unix.S_IFBLK && fst.Rdev == st.Rdev {
				out = append(out, fmt.Sprintf("pid %s %s has it open", pid, name))
				break
			}
		}
	}
	return out
}

// BackingID returns the device and inode of the file the loop device at
// path is bound to, as the kernel holds them; ENXIO if it is unbound.
func BackingID(path string) (dev, ino uint64, err error) {
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
	if err != nil {
		return 0, 0, fmt.Errorf("LOOP_GET_STATUS64 %s: %w", path, err)
	}
	return info.Device, info.Inode, nil
}
