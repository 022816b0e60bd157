//go:build !linux

package unpack

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"runtime"

	"github.com/containerd/errdefs"
)

// Unpacker applies layers to one root directory. It needs openat2 and
// Linux's *at calls: off Linux, New fails with not-implemented.
type Unpacker struct{}

// New is not implemented off Linux.
func New(dir string, opts Options) (*Unpacker, error) {
	return nil, fmt.Errorf("unpack into %q on %s: %w", dir, runtime.GOOS, errdefs.ErrNotImplemented)
}

// Stats tells what the unpacker did so far.
func (u *Unpacker) Stats() Stats { return Stats{} }

// Close releases the unpacker.
func (u *Unpacker) Close() error { return nil }

// Apply is not implemented off Linux.
func (u *Unpacker) Apply(ctx context.Context, r io.Reader) error {
	return fmt.Errorf("unpack on %s: %w", runtime.GOOS, errdefs.ErrNotImplemented)
}

// dirRecord is unused off Linux.
type dirRecord struct{}

// LayerUnpacker is not implemented off Linux.
type LayerUnpacker struct{}

// NewLayer is not implemented off Linux.
func NewLayer(dir string, opts Options) (*LayerUnpacker, error) {
	return nil, fmt.Errorf("unpack into %q on %s: %w", dir, runtime.GOOS, errdefs.ErrNotImplemented)
}

// Entry is not implemented off Linux.
func (lu *LayerUnpacker) Entry(h *tar.Header, r io.Reader) error {
	return fmt.Errorf("unpack on %s: %w", runtime.GOOS, errdefs.ErrNotImplemented)
}

// Finish is not implemented off Linux.
func (lu *LayerUnpacker) Finish() (*Layer, error) {
	return nil, fmt.Errorf("unpack on %s: %w", runtime.GOOS, errdefs.ErrNotImplemented)
}

// Close does nothing off Linux.
func (lu *LayerUnpacker) Close() error { return nil }

// Merge is not implemented off Linux.
func (u *Unpacker) Merge(ctx context.Context, l *Layer) error {
	return fmt.Errorf("unpack on %s: %w", runtime.GOOS, errdefs.ErrNotImplemented)
}
