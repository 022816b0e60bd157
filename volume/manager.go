package volume

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/internal/fsutil"
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
	src, err := openExclusive(sp, rec, recs)
	if err != nil {
		return nil, fail(err)
	}
	if src != nil {
		defer src.Close()
	}
	rec.MountKey = recordMountKey(rec)
	att, err := m.attachRecord(ctx, rec, recs, src, opts.Pending)
	if err != nil {
		return nil, fail(err)
	}
	if rec.Complete {
		hook("complete")
	}
	return att, nil
}

// openExclusive opens a block device or image source once: its identity (set
// in rec), its exclusivity against recs and the attach all come from that
// one file, which a rename in the directory cannot swap for another
// meanwhile. Other kinds have no file: nil.
func openExclusive(sp Spec, rec *record, recs []*record) (*os.File, error) {
	if sp.Kind != KindBlock && sp.Kind != KindImage {
		return nil, nil
	}
	mode := os.O_RDWR
	if sp.ReadOnly {
		mode = os.O_RDONLY
	}
	src, err := openChecked(sp, mode)
	if err != nil {
		return nil, err
	}
	hook("opened")
	if rec.Identity, err = identityOf(src, sp); err == nil {
		err = exclusive(rec, recs, src)
	}
	if err != nil {
		src.Close()
		return nil, err
	}
	return src, nil
}

// recordMountKey is the key of the host mount rec's attachment shares
// (none for raw block and devices).
func recordMountKey(rec *record) string {
	sp := rec.Spec
	switch {
	case sp.Mode == ModeHostMount && (sp.Kind == KindBlock || sp.Kind == KindImage):
		return mountKey(rec.Identity, sp.ReadOnly)
	case sp.Kind == KindDir || sp.Kind == KindFile:
		// A directory or file is bound from a mount of its own under
		// mnt/, made from the opened source (bindSource): never shared.
		return mountKey("dir:"+rec.ID, sp.ReadOnly)
	}
	return ""
}

// attachRecord writes rec down, claims its source host-wide, attaches it
// and writes it again, complete unless pending; a failure undoes all of it.
func (m *Manager) attachRecord(ctx context.Context, rec *record, recs []*record, src *os.File, pending bool) (*Attachment, error) {
	// The record goes down before anything is attached.
	if err := fsutil.WriteJSON(m.recordPath(rec.ID), rec); err != nil {
		return nil, err
	}
	if rec.Identity != "" {
		// Other state roots' attachments of the source, under the
		// host's lock, once the record names this one.
		if err := claimSource(rec, m.recordPath(rec.ID)); err != nil {
			_ = os.Remove(m.recordPath(rec.ID))
			return nil, err
		}
	}
	att, err := m.act(ctx, rec, recs, src)
	if err != nil {
		_ = m.undo(ctx, rec, recs)
		return nil, err
	}
	rec.Complete = !pending
	if err := fsutil.WriteJSON(m.recordPath(rec.ID), rec); err != nil {
		_ = m.undo(ctx, rec, recs)
		return nil, err
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
		prop := sp.Propagation
		if prop == "" {
			prop = PropagationPrivate
		}
		att.Mount = &specs.Mount{Destination: sp.Destination, Type: "bind", Source: mp, Options: append([]string{"rbind", "r" + string(prop)}, flags...)}
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

func randomSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
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

// ReleaseHostBinds takes berth's mounts of owner's directory and file
// sources (bindSource's, under mnt/) off the host, for a container whose
// engine has bound them into its own mount namespace and never binds them
// again (driver.Capabilities.BindsAtCreate). The container keeps its binds
// and their propagation; the host's mount namespace keeps no copy of the
// mounts under a source, so the host can unmount one and remove its
// directory while the container runs (with a copy, rmdir fails with
// EBUSY). Only complete attachments are released; their records stay
// until Detach, which finds nothing left to unmount.
func (m *Manager) ReleaseHostBinds(owner string) error {
	return m.withRecords(func(recs []*record) error {
		var errs []error
		for _, r := range recs {
			if r.Owner == owner && r.Complete && !r.Retired && r.MountKey != "" && (r.Spec.Kind == KindDir || r.Spec.Kind == KindFile) {
				errs = append(errs, unmountDir(m.mountpoint(r.MountKey)))
			}
		}
		return errors.Join(errs...)
	})
}
