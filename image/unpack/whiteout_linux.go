package unpack

import (
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/image/layer"
)

func (u *Unpacker) whiteout(name, dir, base string) error {
	if strings.HasPrefix(base, layer.WhiteoutMeta) && base != layer.OpaqueWhiteout {
		return nil // aufs bookkeeping (.wh..wh.plnk...): nothing to apply
	}
	pfd, err := u.parent(dir, false)
	if err != nil {
		if err == unix.ENOENT {
			return nil // nothing below to hide
		}
		return entryErr(name, "whiteout", err)
	}
	if base == layer.OpaqueWhiteout {
		fd, err := unix.Openat(pfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return entryErr(name, "opaque directory", err)
		}
		defer unix.Close(fd)
		prefix := dir + "/"
		if dir == "." {
			prefix = ""
		}
		err = removeChildren(fd, func(child string) bool {
			_, ok := u.created[prefix+child]
			return ok
		})
		u.invalidate()
		if err != nil {
			return entryErr(name, "opaque directory", err)
		}
		return nil
	}
	target := base[len(layer.WhiteoutPrefix):]
	if _, ok := u.created[path.Join(dir, target)]; ok {
		return nil // made by this layer: a whiteout hides the layers below only
	}
	if err := u.remove(pfd, target); err != nil {
		return entryErr(name, "whiteout", err)
	}
	return nil
}
