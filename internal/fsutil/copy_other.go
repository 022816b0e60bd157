//go:build !linux

package fsutil

import (
	"fmt"
	"os"
	"runtime"

	"github.com/containerd/errdefs"
)

// CopySparse is not implemented off Linux (it copies with SEEK_DATA and
// copy_file_range).
func CopySparse(src, dst string) error {
	return fmt.Errorf("copy %s to %s on %s: %w", src, dst, runtime.GOOS, errdefs.ErrNotImplemented)
}

// CopySparseFrom is not implemented off Linux either.
func CopySparseFrom(in *os.File, dst string) error {
	return fmt.Errorf("copy %s to %s on %s: %w", in.Name(), dst, runtime.GOOS, errdefs.ErrNotImplemented)
}
