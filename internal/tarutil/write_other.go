//go:build !linux

package tarutil

import (
	"fmt"
	"os"
	"runtime"

	"github.com/containerd/errdefs"
)

// openBeneath needs openat2 (no link followed under dir): Linux only.
func openBeneath(dir int, rel string) (*os.File, error) {
	return nil, fmt.Errorf("%s: reading a directory tree on %s: %w", rel, runtime.GOOS, errdefs.ErrNotImplemented)
}
