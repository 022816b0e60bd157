package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/loop"
)

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
