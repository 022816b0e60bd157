package image

import (
	"os"

	"golang.org/x/sys/unix"
)

// adviseSequential tells the kernel f is read once, front to back.
func adviseSequential(f *os.File) {
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_SEQUENTIAL)
}
