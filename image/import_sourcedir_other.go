//go:build !linux

package image

import (
	"fmt"
	"os"
	"runtime"

	"github.com/containerd/errdefs"
)

// open needs openat2 (confinement to the layout directory): Linux only.
func (d *dirSource) open(p string) (*os.File, error) {
	return nil, fmt.Errorf("layout file %q: importing a directory on %s: %w", p, runtime.GOOS, errdefs.ErrNotImplemented)
}
