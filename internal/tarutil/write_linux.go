package tarutil

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openBeneath opens the regular file rel under the directory dir for reading: no link
// is followed on the way (one swapped in since the walk saw the path fails
// the open) and a FIFO swapped in is refused instead of waited on.
func openBeneath(dir int, rel string) (*os.File, error) {
	fd, err := unix.Openat2(dir, rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), rel)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, fmt.Errorf("no longer a regular file")
	}
	return f, nil
}
