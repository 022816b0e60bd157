//go:build !linux

package loop

import (
	"fmt"
	"runtime"

	"github.com/containerd/errdefs"
)

// Backing is not implemented off Linux: there are no loop devices to list.
func Backing() (map[string]string, error) {
	return nil, fmt.Errorf("loop devices on %s: %w", runtime.GOOS, errdefs.ErrNotImplemented)
}
