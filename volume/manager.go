package volume

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/internal/loop"
)

// Manager attaches and detaches volumes under one state directory. Every
// attach writes its record before it acts and marks it complete after, so
// that Open, in the next process, undoes whatever a crash interrupted: no
// mount, loop device or node is ever leaked. Several processes may share a
// directory; a lock file serializes their changes.
type Manager struct {
	dir    string
	policy Policy
}

// Attachment is one attached volume, ready for a container: either a mount
// or a device node.
type Attachment struct {
	ID    string
	Owner string
	Spec  Spec
	// FS is the probed filesystem of a block or image volume.
	FS Filesystem
	// Mount is what the container mounts (a bind of the host mount or a
	// directory, or a tmpfs); nil for raw block.
	Mount *specs.Mount
	// Device is the node a raw-block volume exposes; nil otherwise.
	Device *Device
}

// Device is a block device node made for one container.
type Device struct {
	// HostPath is the node berth made, owned by the container's root.
	HostPath string
	// Path is where the container sees it.
	Path         string
	Major, Minor uint32
	ReadOnly     bool
}

// AttachOptions describe the container a volume is attached to.
type AttachOptions struct {
	// UserNamespace is true when the container has its own user
	// namespace; RootUID/RootGID are the host IDs of its root.
	UserNamespace    bool
	RootUID, RootGID uint32
	// Pending leaves the attachment incomplete until Complete: for a
	// volume the container gets after Attach returns (a hot attach), so
	// that a process killed in between leaves it Unfinished, not attached.
	Pending bool `json:"-"`
}

// record is the on-disk state of one attachment.
type record struct {
	ID       string     `json:"id"`
	Owner    string     `json:"owner"`
	Spec     Spec       `json:"spec"`
	Complete bool       `json:"complete"`
	FS       Filesystem `json:"fs,omitempty"`
	// Identity names the source (device number or file inode) for
	// sharing and exclusivity.
	Identity string `json:"identity,omitempty"`
	// MountKey names the host mount under mnt/, shared by read-only
	// attachments of one source.
	MountKey string `json:"mount_key,omitempty"`
	// Node is a raw-block device node under dev/.
	Node         string `json:"node,omitempty"`
	Major, Minor uint32
	Opts         AttachOptions `json:"opts"`
	// LoopDevice is the loop device of a raw-block volume, bound to the
	// source whose device and inode the kernel gave as BackingDev and
	// BackingIno: undo frees that device if it is still bound to that
	// file, whatever path the file has now.
	LoopDevice             string `json:"loop_device,omitempty"`
	BackingDev, BackingIno uint64 `json:",omitempty"`
	// Retired marks a volume detached from a container that still
	// exists (Retire): gone from the host, but its source stays the
	// container's until DetachAll, as it may hold descriptors of it.
	Retired bool `json:"retired,omitempty"`
}

// testHook, when set by a test, is called at each step of an attach so the
// test can kill the process there.
var testHook func(step string)

func hook(step string) {
	if testHook != nil {
		testHook(step)
	}
}

// OpenManager opens (creating) the volume state under dir with policy p and
// undoes what an earlier process left half-done. live reports whether an
// owner (a container) still exists; attachments of owners that do not are
// detached too. live may be nil to keep them.
func OpenManager(dir string, p Policy, live func(owner string) bool) (*Manager, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	for _, d := range []string{dir, filepath.Join(dir, "records"), filepath.Join(dir, "mnt"), filepath.Join(dir, "dev"), filepath.Join(dir, "owners")} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, err
		}
	}
	m := &Manager{dir: dir, policy: p}
	if err := m.Recover(live); err != nil {
		return nil, err
	}
	return m, nil
}

// Policy returns the policy the manager enforces.
func (m *Manager) Policy() Policy { return m.policy }

func (m *Manager) lock() (func(), error) { return fsutil.Lock(filepath.Join(m.dir, "lock")) }

// LockOwner serializes volume changes for one owner across processes; the
// runtime holds it while it attaches volumes and creates the container, so
// that recovery never mistakes a create in progress for a crash.
//
// An owner's lock file exists only while someone holds or waits for it:
// the holder removes it as it lets go, so no file outlives its container.
func (m *Manager) LockOwner(owner string) (func(), error) {
	return fsutil.LockFile(filepath.Join(m.dir, "owners", owner+".lock"), fsutil.LockOptions{Remove: true})
}

// TryLockOwner is LockOwner without waiting: it fails at once (EWOULDBLOCK)
// while another holder has the owner.
func (m *Manager) TryLockOwner(owner string) (func(), error) {
	return fsutil.LockFile(filepath.Join(m.dir, "owners", owner+".lock"), fsutil.LockOptions{NoWait: true, Remove: true})
}

// HostMount returns the host mount point of owner's host-mounted volume at
// dst (where its filesystem is mounted on the host).
func (m *Manager) HostMount(owner, dst string) (string, error) {
	recs, err := m.records()
	if err != nil {
		return "", err
	}
	id := attachmentID(owner, filepath.Clean(dst))
	for _, r := range recs {
		if r.ID == id && r.Complete && r.MountKey != "" {
			return m.mountpoint(r.MountKey), nil
		}
	}
	return "", fmt.Errorf("volume %s: no host mount for %s: %w", dst, owner, errdefs.ErrNotFound)
}

func (m *Manager) recordPath(id string) string {
	return filepath.Join(m.dir, "records", id+".json")
}

func (m *Manager) records() ([]*record, error) {
	ents, err := os.ReadDir(filepath.Join(m.dir, "records"))
	if err != nil {
		return nil, err
	}
	var out []*record
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		var r record
		if err := fsutil.ReadJSON(filepath.Join(m.dir, "records", e.Name()), &r); err != nil {
			return nil, fmt.Errorf("volume record %s: %w", e.Name(), err)
		}
		out = append(out, &r)
	}
	return out, nil
}

// attachmentID is stable for an owner and destination.
func attachmentID(owner, dst string) string {
	h := sha256.Sum256([]byte(dst))
	return owner + "." + hex.EncodeToString(h[:6])
}

// Attach attaches spec to owner: it resolves the source, enforces the
// policy and exclusivity, probes and checks block and image volumes, mounts
// them on the host (or makes the raw node), and returns what the container
// needs.
func (m *Manager) Attach(ctx context.Context, owner string, spec Spec, opts AttachOptions) (*Attachment, error) {
	sp, err := spec.resolve()
	if err != nil {
		return nil, err
	}
	hook("resolved")
	name := sp.Destination
	fail := func(err error) error { return fmt.Errorf("volume %s: %w", name, err) }
	if sp.Mode == ModeRawBlock && !opts.UserNamespace && !m.policy.RawBlockWithoutUserNamespace {
		return nil, fail(fmt.Errorf("raw block needs a container with its own user namespace (root outside one could mount it): %w", errdefs.ErrFailedPrecondition))
	}
	unlock, err := m.lock()
	if err != nil {
		return nil, fail(err)
	}
	defer unlock()
	recs, err := m.records()
	if err != nil {
		return nil, fail(err)
	}
	rec := &record{ID: attachmentID(owner, sp.Destination), Owner: owner, Spec: sp, Opts: opts}
	for _, r := range recs {
		if r.ID == rec.ID {
			return nil, fail(fmt.Errorf("already attached to %s: %w", owner, errdefs.ErrAlreadyExists))
		}
	}
	// A block device or image is opened once: its identity, its
	// exclusivity and the attach all come from that one file, which a
	// rename in the directory cannot swap for another meanwhile.
	var src *os.File
	if sp.Kind == KindBlock || sp.Kind == KindImage {
		mode := os.O_RDWR
		if sp.ReadOnly {
			mode = os.O_RDONLY
		}
		if src, err = openChecked(sp, mode); err != nil {
			return nil, fail(err)
		}
		defer src.Close()
		hook("opened")
		if rec.Identity, err = identityOf(src, sp); err != nil {
			return nil, fail(err)
		}
		if err := exclusive(rec, recs, src); err != nil {
			return nil, fail(err)
		}
	}
	switch {
	case sp.Mode == ModeHostMount && (sp.Kind == KindBlock || sp.Kind == KindImage):
		rec.MountKey = mountKey(rec.Identity, sp.ReadOnly)
	case sp.Kind == KindDir || sp.Kind == KindFile:
		// A directory or file is bound from a mount of its own under
		// mnt/, made from the opened source (bindSource): never shared.
		rec.MountKey = mountKey("dir:"+rec.ID, sp.ReadOnly)
	}
	// The record goes down before anything is attached.
	if err := fsutil.WriteJSON(m.recordPath(rec.ID), rec); err != nil {
		return nil, fail(err)
	}
	if rec.Identity != "" {
		// Other state roots' attachments of the source, under the
		// host's lock, once the record names this one.
		if err := claimSource(rec, m.recordPath(rec.ID)); err != nil {
			_ = os.Remove(m.recordPath(rec.ID))
			return nil, fail(err)
		}
	}
	att, err := m.act(ctx, rec, recs, src)
	if err != nil {
		_ = m.undo(ctx, rec, recs)
		return nil, fail(err)
	}
	rec.Complete = !opts.Pending
	if err := fsutil.WriteJSON(m.recordPath(rec.ID), rec); err != nil {
		_ = m.undo(ctx, rec, recs)
		return nil, fail(err)
	}
	if rec.Complete {
		hook("complete")
	}
	return att, nil
}

// Complete marks owner's pending attachment at dst (AttachOptions.Pending)
// done, once the container holds it.
func (m *Manager) Complete(owner, dst string) error {
	return m.withRecords(func(recs []*record) error {
		r := findRecord(recs, owner, dst)
		if r == nil {
			return fmt.Errorf("volume %s: not attached to %s: %w", dst, owner, errdefs.ErrNotFound)
		}
		r.Complete = true
		return fsutil.WriteJSON(m.recordPath(r.ID), r)
	})
}

// Unfinished is an attachment a process left incomplete while its owner
// lived on (a hot attach killed halfway): the container may hold the
// volume already.
type Unfinished struct {
	Owner string
	Spec  Spec
}

// Unfinished lists the incomplete attachments of owners live reports as
// existing. Recovery leaves them alone: the caller takes each out of its
// container first (releasing a raw device the container still holds would
// hand its number to the next attach), then Detaches it.
func (m *Manager) Unfinished(live func(owner string) bool) ([]Unfinished, error) {
	recs, err := m.records()
	if err != nil {
		return nil, err
	}
	var out []Unfinished
	for _, r := range recs {
		if !r.Complete && !r.Retired && live(r.Owner) {
			out = append(out, Unfinished{Owner: r.Owner, Spec: r.Spec})
		}
	}
	return out, nil
}

// identityOf names the opened source for sharing and exclusivity: a
// block device by its number and, where the kernel counts them, its disk
// sequence (a device the host made anew under the same number is another
// device); an image file by its device and inode.
func identityOf(f *os.File, sp Spec) (string, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", err
	}
	if sp.Kind == KindBlock {
		id := fmt.Sprintf("blk:%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		if seq, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/diskseq", unix.Major(st.Rdev), unix.Minor(st.Rdev))); err == nil {
			id += ":" + strings.TrimSpace(string(seq))
		}
		return id, nil
	}
	return fmt.Sprintf("file:%d:%d", st.Dev, st.Ino), nil
}

func mountKey(identity string, ro bool) string {
	h := sha256.Sum256([]byte(identity + ":" + strconv.FormatBool(ro)))
	return hex.EncodeToString(h[:8])
}

// exclusive refuses a read-write attach of a source in use, and any attach
// of a source attached read-write: only read-only attachments share.
func exclusive(rec *record, recs []*record, src *os.File) error {
	for _, r := range recs {
		if r.Identity != rec.Identity {
			continue
		}
		if r.Retired {
			if r.Owner == rec.Owner {
				continue // its own descriptors: no one else's data
			}
			return fmt.Errorf("source %s was detached from %s, which may still hold it (until it is deleted): %w", rec.Spec.Source, r.Owner, errdefs.ErrFailedPrecondition)
		}
		if !r.Spec.ReadOnly || !rec.Spec.ReadOnly || r.Spec.Mode == ModeRawBlock || rec.Spec.Mode == ModeRawBlock {
			return fmt.Errorf("source %s is attached to %s at %s; only read-only host mounts share: %w", rec.Spec.Source, r.Owner, r.Spec.Destination, errdefs.ErrFailedPrecondition)
		}
	}
	if sharedMountOf(rec, recs) {
		return nil
	}
	// Not ours to share: a source the host itself uses is refused.
	var st unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &st); err != nil {
		return err
	}
	if rec.Spec.Kind == KindBlock {
		major, minor := unix.Major(st.Rdev), unix.Minor(st.Rdev)
		mounted, err := mountinfo.GetMounts(func(i *mountinfo.Info) (skip, stop bool) {
			return uint32(i.Major) != major || uint32(i.Minor) != minor, false
		})
		if err != nil {
			return err
		}
		if len(mounted) > 0 {
			return fmt.Errorf("block device %s is mounted at %s: %w", rec.Spec.Source, mounted[0].Mountpoint, errdefs.ErrFailedPrecondition)
		}
		// A device the kernel has claimed (mounted, a partition of it
		// mounted, held by device-mapper, md or swap) refuses O_EXCL.
		fd, err := unix.Open(rec.Spec.Source, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("block device %s is in use on the host: %w", rec.Spec.Source, errdefs.ErrFailedPrecondition)
		}
		if err == nil {
			unix.Close(fd)
		}
	}
	// Nor one a loop device is bound to: an image berth or the host has
	// attached; a block device a container reaches through a loop device
	// of berth's (raw) or a mount over one (read-only), which keeps its
	// hold, visible here, as long as anything of the container's holds
	// it: a descriptor it kept, parked in a socket, mapped, or handed to
	// another container.
	bound, err := loop.BackedBy(st.Dev, st.Ino)
	if err != nil {
		return err
	}
	if len(bound) > 0 {
		return fmt.Errorf("%s %s is already attached on %s: %w", rec.Spec.Kind, rec.Spec.Source, bound[0], errdefs.ErrFailedPrecondition)
	}
	return nil
}

// sharedMountOf reports whether another complete record already holds the
// host mount rec would use.
func sharedMountOf(rec *record, recs []*record) bool {
	key := mountKey(rec.Identity, rec.Spec.ReadOnly)
	for _, r := range recs {
		if r.ID != rec.ID && r.MountKey == key && r.Complete {
			return true
		}
	}
	return false
}

func (m *Manager) mountpoint(key string) string { return filepath.Join(m.dir, "mnt", key) }

// nodePath is where a raw-block attachment's device node is made.
func (m *Manager) nodePath(id string) string { return filepath.Join(m.dir, "dev", id) }

// act does the attach.
func (m *Manager) act(ctx context.Context, rec *record, recs []*record, src *os.File) (*Attachment, error) {
	sp := rec.Spec
	att := &Attachment{ID: rec.ID, Owner: rec.Owner, Spec: sp}
	flags := []string{"nosuid", "nodev"}
	if m.policy.NoExec {
		flags = append(flags, "noexec")
	}
	if sp.ReadOnly {
		flags = append(flags, "ro")
	}
	switch {
	case sp.Kind == KindTmpfs:
		if !m.policy.allows("tmpfs") {
			return nil, fmt.Errorf("tmpfs is not allowed by the policy: %w", errdefs.ErrInvalidArgument)
		}
		att.Mount = &specs.Mount{Destination: sp.Destination, Type: "tmpfs", Source: "tmpfs",
			Options: append(flags, "size="+strconv.FormatInt(sp.TmpfsSize, 10), "mode=1777")}
		return att, nil
	case sp.Kind == KindDir || sp.Kind == KindFile:
		mp := m.mountpoint(rec.MountKey)
		if err := bindSource(sp, mp, m.policy.NoExec); err != nil {
			return nil, err
		}
		att.Mount = &specs.Mount{Destination: sp.Destination, Type: "bind", Source: mp, Options: append([]string{"rbind", "rprivate"}, flags...)}
		return att, nil
	case sp.Mode == ModeRawBlock:
		return m.attachRaw(rec, att, src)
	}
	mp := m.mountpoint(rec.MountKey)
	if sharedMountOf(rec, recs) {
		// Another read-only attachment holds this mount: share it.
		var other *record
		for _, r := range recs {
			if r.MountKey == rec.MountKey && r.Complete {
				other = r
				break
			}
		}
		rec.FS, att.FS = other.FS, other.FS
	} else {
		fs, err := m.hostMount(ctx, sp, mp, src)
		if err != nil {
			return nil, err
		}
		rec.FS, att.FS = fs, fs
	}
	att.Mount = &specs.Mount{Destination: sp.Destination, Type: "bind", Source: mp, Options: append([]string{"rbind", "rprivate"}, flags...)}
	return att, nil
}

// openSource gives the device to probe, check and mount for the opened
// source src: a read-write block device itself, an image file (or a
// read-only block device) on an autoclear loop device, read-only for a
// read-only volume: a read-only mount still writes (ext4 cleans up its
// orphan list, superblock fields change), and only a device the kernel
// cannot write keeps the volume's bytes as they were. Closing the returned
// file releases the loop unless a mount holds it.
func openSource(sp Spec, src *os.File) (dev *os.File, path string, err error) {
	if sp.Kind == KindBlock && !sp.ReadOnly {
		fd, err := unix.Dup(int(src.Fd()))
		if err != nil {
			return nil, "", err
		}
		unix.CloseOnExec(fd)
		return os.NewFile(uintptr(fd), sp.Source), sp.Source, nil
	}
	ld, err := loop.Attach(src, loop.Options{ReadOnly: sp.ReadOnly, Autoclear: true})
	if err != nil {
		return nil, "", err
	}
	hook("loop-attached")
	return ld.File, ld.Path, nil
}

func deviceSize(f *os.File) (int64, error) {
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	_, err = f.Seek(0, io.SeekStart)
	return n, err
}

// hostMount probes, checks and mounts a block or image source at mp. The
// device that is probed is the one mounted (the loop device holding the
// open image, or the block device), with the probed type named: the kernel
// never guesses. When it fails, an image's loop device is free before it
// returns (within ctx).
func (m *Manager) hostMount(ctx context.Context, sp Spec, mp string, src *os.File) (fs Filesystem, err error) {
	dev, path, err := openSource(sp, src)
	if err != nil {
		return Filesystem{}, err
	}
	var backingDev, backingIno uint64
	if sp.Kind == KindImage {
		info, err := unix.IoctlLoopGetStatus64(int(dev.Fd()))
		if err != nil {
			dev.Close()
			return Filesystem{}, fmt.Errorf("LOOP_GET_STATUS64 %s: %w", path, err)
		}
		backingDev, backingIno = info.Device, info.Inode
	}
	defer func() {
		dev.Close()
		if err != nil && sp.Kind == KindImage {
			err = errors.Join(err, releaseLoop(ctx, path, backingDev, backingIno, sp.Source))
		}
	}()
	size, err := deviceSize(dev)
	if err != nil {
		return Filesystem{}, err
	}
	fs, err = Probe(dev, size)
	if err != nil {
		return Filesystem{}, err
	}
	if err := m.policy.Check(fs); err != nil {
		return fs, err
	}
	if m.policy.Fsck {
		if err := Fsck(ctx, path, fs); err != nil {
			return fs, err
		}
	}
	if err := os.Mkdir(mp, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fs, err
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	if m.policy.NoExec {
		flags |= unix.MS_NOEXEC
	}
	var data []string
	switch fs.Driver {
	case "xfs":
		// Copies of one filesystem (snapshots) share a UUID; xfs would
		// refuse all but the first.
		data = append(data, "nouuid")
	case "ext4":
		// The superblock may ask the kernel to panic on the first error
		// it finds (tune2fs -e panic), and the tenant can make one.
		data = append(data, "errors=remount-ro")
	}
	if sp.ReadOnly {
		flags |= unix.MS_RDONLY
		// Read-only must mean no write at all: no journal replay.
		switch fs.Driver {
		case "ext4":
			data = append(data, "noload")
		case "xfs":
			data = append(data, "norecovery")
		}
	}
	hook("mount")
	if err := unix.Mount(path, mp, fs.Driver, flags, strings.Join(data, ",")); err != nil {
		_ = os.Remove(mp)
		return fs, fmt.Errorf("mount %s (%s) at %s: %v: %w", sp.Source, fs.Type, mp, err, errdefs.ErrInvalidArgument)
	}
	hook("mounted")
	return fs, nil
}

// attachRaw makes a device node for the container's root.
func (m *Manager) attachRaw(rec *record, att *Attachment, src *os.File) (*Attachment, error) {
	sp := rec.Spec
	// A loop device of berth's over the source, a block device too: the
	// container never holds the source itself, and the loop's binding
	// (which it cannot undo: the loop ioctls are denied to it) shows
	// while anything of the container's holds it. No autoclear: only
	// undo frees it, by the identity recorded here.
	ld, err := loop.Attach(src, loop.Options{ReadOnly: sp.ReadOnly})
	if err != nil {
		return nil, err
	}
	hook("loop-attached")
	var st unix.Stat_t
	err = unix.Fstat(int(ld.File.Fd()), &st)
	if err == nil {
		rec.LoopDevice = ld.Path
		rec.BackingDev, rec.BackingIno, err = loop.BackingID(ld.Path)
	}
	ld.Close()
	if err == nil {
		err = fsutil.WriteJSON(m.recordPath(rec.ID), rec)
	}
	if err != nil {
		return nil, err
	}
	rdev := st.Rdev
	rec.Major, rec.Minor = unix.Major(rdev), unix.Minor(rdev)
	rec.Node = m.nodePath(rec.ID)
	_ = os.Remove(rec.Node)
	if err := unix.Mknod(rec.Node, unix.S_IFBLK|0o600, int(rdev)); err != nil {
		return nil, fmt.Errorf("mknod: %w", err)
	}
	if err := os.Chown(rec.Node, int(rec.Opts.RootUID), int(rec.Opts.RootGID)); err != nil {
		return nil, err
	}
	att.Device = &Device{HostPath: rec.Node, Path: sp.Destination, Major: rec.Major, Minor: rec.Minor, ReadOnly: sp.ReadOnly}
	return att, nil
}

// undo removes whatever rec may have attached, tolerating missing pieces,
// and its record. recs are the other records (to keep shared mounts). It
// returns once an image's loop device is free, or fails with a *heldError
// naming who keeps it when ctx ends first; everything else is undone
// either way.
func (m *Manager) undo(ctx context.Context, rec *record, recs []*record) error {
	var errs []error
	if rec.MountKey != "" {
		shared := false
		for _, r := range recs {
			if r.ID != rec.ID && r.MountKey == rec.MountKey {
				shared = true
			}
		}
		if !shared {
			mp := m.mountpoint(rec.MountKey)
			var dev string
			if mi, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(mp)); err == nil && len(mi) == 1 {
				dev = mi[0].Source
			}
			var backingDev, backingIno uint64
			// Image files, and read-only block devices, are mounted
			// from a loop device of berth's.
			isLoop := (rec.Spec.Kind == KindImage || rec.Spec.ReadOnly) && strings.HasPrefix(dev, "/dev/loop")
			if isLoop {
				// The kernel's own names for the file: after the
				// unmount the device may be freed and bound anew by
				// anyone, and must then be left alone.
				var err error
				if backingDev, backingIno, err = loop.BackingID(dev); err != nil {
					isLoop = false
				}
			}
			errs = append(errs, unmountDir(mp))
			if isLoop {
				errs = append(errs, releaseLoop(ctx, dev, backingDev, backingIno, rec.Spec.Source))
			}
		}
	}
	if rec.Spec.Mode == ModeRawBlock {
		// Where attachRaw makes it, whether or not a crash kept the
		// record from naming it.
		if err := os.Remove(m.nodePath(rec.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	switch {
	case rec.Spec.Mode == ModeRawBlock && rec.LoopDevice != "":
		errs = append(errs, releaseLoop(ctx, rec.LoopDevice, rec.BackingDev, rec.BackingIno, rec.Spec.Source))
	case rec.Spec.Mode == ModeRawBlock && rec.Spec.Kind == KindImage:
		// A crash before the record named its loop device.
		errs = append(errs, detachLoopsOf(ctx, rec.Spec.Source, rec.Identity)...)
	}
	if rec.Identity != "" {
		errs = append(errs, releaseSource(m.recordPath(rec.ID)))
	}
	if err := os.Remove(m.recordPath(rec.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// unmountDir unmounts mp if it is a mount point and removes it. With the
// mount gone, an autoclear loop device under it frees itself.
func unmountDir(mp string) error {
	for {
		mounted, err := mountinfo.Mounted(mp)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if !mounted {
			break
		}
		if err := unix.Unmount(mp, 0); err != nil {
			if !errors.Is(err, unix.EBUSY) {
				return fmt.Errorf("unmount %s: %w", mp, err)
			}
			// Still used (a container's view): detach it from the host
			// now; the kernel frees it with the last user.
			if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
				return fmt.Errorf("unmount %s: %w", mp, err)
			}
		}
	}
	if err := os.Remove(mp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// heldError is a loop device that something other than berth keeps once
// berth has let go of it: a mount of its filesystem in another mount
// namespace, or a process that has it open. Nothing of berth's is left;
// the kernel frees the device with its last holder.
type heldError struct {
	dev, source            string
	backingDev, backingIno uint64
	holders                []string
	err                    error
}

func (e *heldError) Error() string {
	who := "no holder found (it may have just let go)"
	if len(e.holders) > 0 {
		who = strings.Join(e.holders, "; ")
	}
	return fmt.Sprintf("loop device %s still holds %s: %s: %v", e.dev, e.source, who, e.err)
}

// Unwrap gives the wait's own error and the class: the device is in use,
// a state of the host the caller may wait out.
func (e *heldError) Unwrap() []error { return []error{e.err, errdefs.ErrFailedPrecondition} }

// releaseLoop frees the loop device dev of the file source (device
// backingDev, inode backingIno) and waits until it is free, or until ctx
// is done. Its mount is gone: what may still claim the device is another
// mount namespace's mount of its filesystem, until that namespace goes (a
// container's, kept by a thread of its runtime or by its last process), or
// a process that has the device open. The kernel announces the device's
// release with an event, so the wait needs no polling and no grace period.
func releaseLoop(ctx context.Context, dev string, backingDev, backingIno uint64, source string) error {
	free, err := loop.Free(dev, backingDev, backingIno)
	if err != nil || free {
		return err
	}
	// Held: watch, then look again, so that no release goes unseen.
	w, err := loop.Watch()
	if err != nil {
		return &heldError{dev: dev, source: source, backingDev: backingDev, backingIno: backingIno, holders: loop.Holders(dev), err: err}
	}
	defer w.Close()
	for {
		free, err := loop.Free(dev, backingDev, backingIno)
		if err != nil || free {
			return err
		}
		if err := w.Wait(ctx, dev); err != nil {
			if ctx.Err() == nil {
				return err
			}
			return &heldError{dev: dev, source: source, backingDev: backingDev, backingIno: backingIno, holders: loop.Holders(dev), err: err}
		}
	}
}

// detachLoopsOf frees every loop device backed by the file source whose
// identity is still id, as releaseLoop does.
func detachLoopsOf(ctx context.Context, source, id string) []error {
	var st unix.Stat_t
	if err := unix.Stat(source, &st); err != nil {
		return nil
	}
	if fmt.Sprintf("file:%d:%d", st.Dev, st.Ino) != id {
		return nil // another file under that name now
	}
	bound, err := loop.Backing()
	if err != nil {
		return []error{err}
	}
	var errs []error
	for dev, file := range bound {
		if file != source && strings.TrimSuffix(file, " (deleted)") != source {
			continue
		}
		d, i, err := loop.BackingID(dev)
		if err != nil || d != st.Dev || i != st.Ino {
			continue // unbound, or rebound to another file meanwhile
		}
		errs = append(errs, releaseLoop(ctx, dev, d, i, source))
	}
	return errs
}

// withoutHeld drops the *heldError parts of err, the result of undo.
func withoutHeld(err error) error {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else if err != nil {
		errs = []error{err}
	}
	var keep []error
	for _, e := range errs {
		var held *heldError
		if !errors.As(e, &held) {
			keep = append(keep, e)
		}
	}
	return errors.Join(keep...)
}

// Detach undoes owner's attachment at dst. It returns once nothing of it is
// left on the host, an image's loop device included, or fails when ctx
// ends first, naming what still holds the device (everything else is
// undone and the device goes with its last holder).
func (m *Manager) Detach(ctx context.Context, owner, dst string) error {
	var undone error
	err := m.withRecords(func(recs []*record) error {
		r := findRecord(recs, owner, dst)
		if r == nil {
			return fmt.Errorf("volume %s: not attached to %s: %w", dst, owner, errdefs.ErrNotFound)
		}
		undone = m.undo(noWait(), r, recs)
		return nil
	})
	if err != nil {
		return err
	}
	if err := awaitReleases(ctx, undone); err != nil {
		return fmt.Errorf("volume %s: detach: %w", dst, err)
	}
	return nil
}

func findRecord(recs []*record, owner, dst string) *record {
	id := attachmentID(owner, filepath.Clean(dst))
	for _, r := range recs {
		if r.ID == id {
			return r
		}
	}
	return nil
}

// Retire takes owner's volume at dst off the host, as Detach does, from a
// container that goes on running: the container may still hold
// descriptors it opened before (a file of the volume, its raw device), and
// Linux cannot take them back. So the source stays the container's, as if
// attached, until DetachAll when the container is gone: no other container
// gets it meanwhile (its own may, again). Nothing is waited for.
func (m *Manager) Retire(ctx context.Context, owner, dst string) error {
	return m.withRecords(func(recs []*record) error {
		r := findRecord(recs, owner, dst)
		if r == nil {
			return fmt.Errorf("volume %s: not attached to %s: %w", dst, owner, errdefs.ErrNotFound)
		}
		if r.Identity != "" {
			tomb := *r
			tomb.ID, tomb.Retired, tomb.MountKey, tomb.Node = r.ID+".retired."+randomSuffix(), true, "", ""
			tomb.Complete = true // nothing left to finish: it only holds the source
			if err := fsutil.WriteJSON(m.recordPath(tomb.ID), &tomb); err != nil {
				return fmt.Errorf("volume %s: detach: %w", dst, err)
			}
			if err := claimSource(&tomb, m.recordPath(tomb.ID)); err != nil {
				_ = os.Remove(m.recordPath(tomb.ID))
				return fmt.Errorf("volume %s: detach: %w", dst, err)
			}
		}
		if err := withoutHeld(m.undo(noWait(), r, recs)); err != nil {
			return fmt.Errorf("volume %s: detach: %w", dst, err)
		}
		return nil
	})
}

// noWait is a context already done: undo under the manager's lock never
// waits for a device something else holds (that would hold every other
// volume operation of the directory up); awaitReleases waits after.
func noWait() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// awaitReleases waits, within ctx, for the loop devices undo found held,
// and returns undo's other errors with what is still held then.
func awaitReleases(ctx context.Context, undone error) error {
	var errs []error
	if j, ok := undone.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else if undone != nil {
		errs = []error{undone}
	}
	var out []error
	for _, e := range errs {
		var held *heldError
		if errors.As(e, &held) {
			e = releaseLoop(ctx, held.dev, held.backingDev, held.backingIno, held.source)
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

func randomSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// withRecords runs fn on every record under the manager's lock.
func (m *Manager) withRecords(fn func(recs []*record) error) error {
	unlock, err := m.lock()
	if err != nil {
		return err
	}
	defer unlock()
	recs, err := m.records()
	if err != nil {
		return err
	}
	return fn(recs)
}

// DetachAll undoes every attachment of owner, as Detach does.
func (m *Manager) DetachAll(ctx context.Context, owner string) error {
	var undone []error
	err := m.withRecords(func(recs []*record) error {
		for i, r := range recs {
			if r.Owner == owner {
				undone = append(undone, m.undo(noWait(), r, recs))
				recs[i] = &record{} // gone: no longer shares a mount
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return awaitReleases(ctx, errors.Join(undone...))
}

// Attachments lists owner's complete attachments.
func (m *Manager) Attachments(owner string) ([]Spec, error) {
	recs, err := m.records()
	if err != nil {
		return nil, err
	}
	var out []Spec
	for _, r := range recs {
		if r.Owner == owner && r.Complete && !r.Retired {
			out = append(out, r.Spec)
		}
	}
	return out, nil
}

// Recover undoes attachments a crashed process left incomplete, and, when
// live is given, those whose owner no longer exists. Owners locked by a live
// process (a create in progress) are left alone. It does not wait for loop
// devices that other mount namespaces or processes still hold once berth's
// mounts are gone: the kernel frees each with its last holder.
func (m *Manager) Recover(live func(owner string) bool) error {
	return m.withRecords(func(recs []*record) error { return m.recover(recs, live) })
}

func (m *Manager) recover(recs []*record, live func(owner string) bool) error {
	// Recovery runs as a manager opens, with no caller's context to bound
	// a wait: devices still held elsewhere are looked at once, not waited
	// for, and are no failure.
	now, cancel := context.WithCancel(context.Background())
	cancel()
	var errs []error
	for i, r := range recs {
		if live != nil && live(r.Owner) {
			continue // complete, or Unfinished: its container may hold it
		}
		if r.Complete && live == nil {
			continue
		}
		release, err := fsutil.LockFile(filepath.Join(m.dir, "owners", r.Owner+".lock"), fsutil.LockOptions{NoWait: true, Remove: true})
		if err != nil {
			continue // its owner is being created or changed right now
		}
		errs = append(errs, withoutHeld(m.undo(now, r, recs)))
		recs[i] = &record{}
		release()
	}
	// Mount points no record names: a crash between mount and record is
	// impossible (the record comes first), but an operator may have
	// removed records by hand.
	used := map[string]bool{}
	for _, r := range recs {
		used[r.MountKey] = true
	}
	ents, _ := os.ReadDir(filepath.Join(m.dir, "mnt"))
	for _, e := range ents {
		if !used[e.Name()] {
			errs = append(errs, unmountDir(m.mountpoint(e.Name())))
		}
	}
	return errors.Join(errs...)
}
