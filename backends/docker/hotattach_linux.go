package docker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/internal/mountns"
	"github.com/berthrun/berth/runtime/driver"
)

// Hot attach. Docker has no API to add a mount (or a device) to a running
// container, but on this host the container's mount namespace is reachable
// through its init's pid: berth does what the embedded engine does
// (internal/mountns). The mount is prepared on the host, detached (a clone
// of the source by open_tree, ID-mapped through the container's user
// namespace on a userns-remap daemon, or a new tmpfs by fsmount), then a
// throwaway thread that entered the container's mount namespace moves it to
// its destination, resolved inside the container's root without following
// anything the tenant planted out of it. The mount's ID is recorded (in
// the container's directory under the state directory) and a detach
// unmounts that mount wherever the tenant moved it since.
//
// A raw device is a bind of berth's node, allowed in the container's
// devices cgroup by writing devices.allow (and devices.deny at detach),
// which needs cgroup v1: on a cgroup v2 host the device rules are an eBPF
// program Docker installed, and attaching a device is refused
// (not-implemented).
//
// Refused: a container Docker created but did not start (it has no
// process, hence no mount namespace yet: failed-precondition), a daemon on
// another host (Capabilities.HotAttach is false). Volumes given at create
// were mounted by runc after berth's last look, so their mount ID is not
// known: a detach of one unmounts what is mounted at its destination,
// resolved in the container's root.

// hotFile records the hot-attached mounts of a container by destination.
const hotFile = "hot-attached.json"

// hotMount is one volume's mount in a container.
type hotMount struct {
	ID     int            `json:"id"`
	Device *driver.Device `json:"device,omitempty"`
}

func (r *Runtime) readHot(id string) (map[string]hotMount, error) {
	m := map[string]hotMount{}
	err := fsutil.ReadJSON(filepath.Join(r.mountsDir(id), hotFile), &m)
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	return m, err
}

func (r *Runtime) writeHot(id string, m map[string]hotMount) error {
	if err := os.MkdirAll(r.mountsDir(id), 0o711); err != nil {
		return err
	}
	return fsutil.WriteJSON(filepath.Join(r.mountsDir(id), hotFile), m)
}

// hotTarget is a running container as a hot attach reaches it.
type hotTarget struct {
	dockerID         string
	pid              int
	rootUID, rootGID int
}

func (r *Runtime) hotTarget(ctx context.Context, id string) (*hotTarget, error) {
	if !r.local {
		return nil, notImplemented("hot attach: the Docker daemon is not on this host")
	}
	c, err := r.inspect(ctx, id)
	if err != nil {
		return nil, err
	}
	if c.State == nil || !c.State.Running || c.State.Pid <= 0 {
		return nil, fmt.Errorf("Docker starts a container's processes only at start: no mount namespace to attach a volume to yet: %w", errdefs.ErrFailedPrecondition)
	}
	if c.State.Paused {
		return nil, fmt.Errorf("the container is paused: %w", errdefs.ErrFailedPrecondition)
	}
	t := &hotTarget{dockerID: c.ID, pid: c.State.Pid}
	rec, err := readRecord(c.Config.Labels)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrDataLoss)
	}
	if l := rec.Spec.Linux; l != nil && len(l.UIDMappings) > 0 && len(l.GIDMappings) > 0 {
		t.rootUID, t.rootGID = int(l.UIDMappings[0].HostID), int(l.GIDMappings[0].HostID)
	}
	return t, nil
}

var _ driver.VolumeAttacher = (*Runtime)(nil)

// AttachVolume implements driver.VolumeAttacher (Capabilities.HotAttach).
func (r *Runtime) AttachVolume(ctx context.Context, id string, a *driver.Attachment) error {
	t, err := r.hotTarget(ctx, id)
	if err != nil {
		return err
	}
	tree, dst, isFile, err := detachedTree(t, a)
	if err != nil {
		return err
	}
	defer unix.Close(tree)
	// The mount is known by its ID before its device is allowed: a device
	// the container may use is always one a detach finds.
	mid, err := mountns.MoveInto(ctx, t.pid, t.rootUID, t.rootGID, tree, dst, isFile)
	if err == nil {
		var m map[string]hotMount
		if m, err = r.readHot(id); err == nil {
			m[filepath.Clean(dst)] = hotMount{ID: mid, Device: a.Device}
			err = r.writeHot(id, m)
		}
		if err == nil && a.Device != nil {
			err = allowDevice(t.dockerID, *a.Device, true)
		}
		if err != nil {
			_ = r.DetachVolume(context.WithoutCancel(ctx), id, dst)
		}
	}
	if err != nil {
		return fmt.Errorf("volume %s: mount in container: %w", dst, classifyMount(err))
	}
	return nil
}

// DetachVolume implements driver.VolumeAttacher (Capabilities.HotAttach): a
// hot-attached volume's mount is found by its ID, a volume given at create
// by its destination; a device's rule leaves the devices cgroup whatever
// became of its mount.
func (r *Runtime) DetachVolume(ctx context.Context, id, dst string) error {
	t, err := r.hotTarget(ctx, id)
	if err != nil {
		return err
	}
	dst = filepath.Clean(dst)
	m, err := r.readHot(id)
	if err != nil {
		return err
	}
	hm, known := m[dst]
	var dev *unix.Stat_t
	if known {
		err = mountns.UnmountByID(ctx, t.pid, t.rootUID, t.rootGID, hm.ID)
	} else {
		dev, err = mountns.UnmountPath(ctx, t.pid, t.rootUID, t.rootGID, dst)
	}
	if err != nil {
		return fmt.Errorf("volume %s: %w", dst, classifyMount(err))
	}
	var d *driver.Device
	switch {
	case hm.Device != nil:
		d = hm.Device
	case dev != nil:
		d = &driver.Device{Major: unix.Major(dev.Rdev), Minor: unix.Minor(dev.Rdev)}
	}
	if d != nil {
		if err := allowDevice(t.dockerID, *d, false); err != nil {
			return err
		}
	}
	if known {
		delete(m, dst)
		return r.writeHot(id, m)
	}
	return nil
}

// classifyMount gives an error of the kernel's a class.
func classifyMount(err error) error {
	switch {
	case errdefs.IsFailedPrecondition(err) || errdefs.IsInvalidArgument(err) || errdefs.IsNotImplemented(err) || errdefs.IsNotFound(err):
		return err
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ESRCH):
		return fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES), errors.Is(err, unix.EBUSY), errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.EEXIST):
		return fmt.Errorf("%w: %w", err, errdefs.ErrFailedPrecondition)
	case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EOPNOTSUPP):
		return fmt.Errorf("%w: %w", err, errdefs.ErrNotImplemented)
	}
	return err
}

// devicesCgroup returns the container's cgroup v1 devices directory.
func devicesCgroup(dockerID string) (string, error) {
	for _, d := range cgroupDirsOf(dockerID) {
		if _, err := os.Stat(filepath.Join(d, "devices.allow")); err == nil {
			return d, nil
		}
	}
	return "", notImplemented("raw devices attached to a running Docker container: no cgroup v1 devices controller for it on this host (cgroup v2 device rules are Docker's eBPF program)")
}

// allowDevice adds (or removes) a block device's rule in the container's
// devices cgroup.
func allowDevice(dockerID string, d driver.Device, allow bool) error {
	dir, err := devicesCgroup(dockerID)
	if err != nil {
		return err
	}
	file, rule := "devices.deny", fmt.Sprintf("b %d:%d rwm", d.Major, d.Minor)
	if allow {
		access := "rw"
		if d.ReadOnly {
			access = "r"
		}
		file, rule = "devices.allow", fmt.Sprintf("b %d:%d %s", d.Major, d.Minor, access)
	}
	if err := os.WriteFile(filepath.Join(dir, file), []byte(rule), 0); err != nil {
		return fmt.Errorf("devices cgroup: %w", err)
	}
	return nil
}

// detachedTree makes the detached mount tree a hot attachment moves into
// the container, and tells where it goes and whether it is a file. The
// container's user namespace an ID-mapped bind takes is open only while
// the tree is made.
func detachedTree(t *hotTarget, a *driver.Attachment) (tree int, dst string, isFile bool, err error) {
	if a.Device != nil {
		if _, err := devicesCgroup(t.dockerID); err != nil {
			return -1, a.Device.Path, true, err
		}
		if err := os.Chown(a.Device.HostPath, t.rootUID, t.rootGID); err != nil {
			return -1, a.Device.Path, true, fmt.Errorf("raw device %s: %w", a.Device.Path, err)
		}
	}
	tree, dst, isFile, err = mountns.Detached(t.pid, t.rootUID, t.rootGID, a)
	if err != nil {
		return -1, dst, isFile, fmt.Errorf("volume %s: %w", dst, classifyMount(err))
	}
	return tree, dst, isFile, nil
}
