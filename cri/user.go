package cri

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/user"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/mountns"
)

// maxUserDB caps what is read of an image's /etc/passwd or /etc/group:
// the image is the tenant's.
const maxUserDB = 1 << 20

// readInRoot reads a regular file of an image's tree, resolving its path
// inside the tree (a link in the image cannot lead out of it), at most
// maxUserDB bytes; a file that is not there reads as empty.
func readInRoot(root, path string) ([]byte, error) {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("image tree %s: %w", root, err)
	}
	defer unix.Close(rfd)
	// Opened as a path first: a device node there is never opened (a
	// tape rewinds on open), only a regular file is, through the path.
	pfd, err := mountns.OpenInRoot(rfd, path, unix.O_PATH)
	if err == unix.ENOENT {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("image's %s: %w", path, err)
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("image's %s is not a regular file: %w", path, errdefs.ErrInvalidArgument)
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", pfd), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("image's %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxUserDB+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxUserDB {
		return nil, fmt.Errorf("image's %s is larger than %d bytes: %w", path, maxUserDB, errdefs.ErrInvalidArgument)
	}
	return data, nil
}

// execUser resolves spec ("name", "uid", "name:group", "uid:gid"...) as
// the image's /etc/passwd and /etc/group define it, with the groups the
// user belongs to there.
func execUser(root, spec string) (*user.ExecUser, error) {
	passwd, err := readInRoot(root, "/etc/passwd")
	if err != nil {
		return nil, err
	}
	group, err := readInRoot(root, "/etc/group")
	if err != nil {
		return nil, err
	}
	u, err := user.GetExecUser(spec, &user.ExecUser{Uid: 0, Gid: 0, Home: "/"}, bytes.NewReader(passwd), bytes.NewReader(group))
	if err != nil {
		return nil, fmt.Errorf("user %q in the image: %v: %w", spec, err, errdefs.ErrInvalidArgument)
	}
	return u, nil
}
