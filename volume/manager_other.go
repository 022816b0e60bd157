//go:build !linux

package volume

import (
	"context"
	"fmt"
	"os"
	"runtime"

	"github.com/containerd/errdefs"
)

// Off Linux the manager keeps its records and hands out tmpfs volumes,
// but attaches no source: what does (open, mount, loop devices, nodes)
// is not implemented.

func notImplemented(what string) error {
	return fmt.Errorf("volume: %s on %s: %w", what, runtime.GOOS, errdefs.ErrNotImplemented)
}

func openChecked(sp Spec, flags int) (*os.File, error) {
	return nil, notImplemented("opening a source")
}

func bindSource(sp Spec, mp string, noexec bool) error {
	return notImplemented("binding a directory or file")
}

func identityOf(f *os.File, sp Spec) (string, error) {
	return "", notImplemented("identifying a source")
}

func exclusive(rec *record, recs []*record, src *os.File) error {
	return notImplemented("checking a source's use")
}

func (m *Manager) hostMount(ctx context.Context, sp Spec, mp string, src *os.File) (Filesystem, error) {
	return Filesystem{}, notImplemented("mounting a block device or image")
}

func (m *Manager) attachRaw(rec *record, att *Attachment, src *os.File) (*Attachment, error) {
	return nil, notImplemented("raw block")
}

func (m *Manager) undo(ctx context.Context, rec *record, recs []*record) error {
	return notImplemented("detaching")
}

func unmountDir(mp string) error { return notImplemented("unmounting") }

func releaseLoop(ctx context.Context, dev string, backingDev, backingIno uint64, source string) error {
	return notImplemented("releasing a loop device")
}
