//go:build !linux

package kernfs

import (
	"errors"
	"os"
)

// ErrKernelInterface is wrapped by every refusal of this package.
var ErrKernelInterface = errors.New("kernel interface filesystem")

// Types lists the kernel interface filesystems (none off Linux).
func Types() []string { return nil }

// Check is not supported off Linux.
func Check(fd int) error { return errors.ErrUnsupported }

// CheckUnder is not supported off Linux.
func CheckUnder(dir string) error { return errors.ErrUnsupported }

// Open is not supported off Linux.
func Open(path string) (*os.File, error) { return nil, errors.ErrUnsupported }
