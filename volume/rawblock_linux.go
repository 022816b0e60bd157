package volume

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fsutil"
	"github.com/berthrun/berth/internal/loop"
)

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
