package image

import "golang.org/x/sys/unix"

// renameNoReplace renames src to dst unless dst exists (already-exists);
// moved is false, with no error, when src is gone or dst is on another
// filesystem.
func renameNoReplace(src, dst string) (moved bool, err error) {
	err = unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
	switch err {
	case nil:
		return true, nil
	case unix.EXDEV, unix.ENOENT:
		return false, nil
	}
	return false, err
}
