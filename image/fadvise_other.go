//go:build !linux

package image

import "os"

// adviseSequential does nothing off Linux.
func adviseSequential(f *os.File) {}
