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
	opaque := base == layer.OpaqueWhiteout
	target := base[len(layer.WhiteoutPrefix):]
	pfd, err := u.parent(dir, false)
	if err != nil {
		if err == unix.ENOENT {
			// Nothing below to hide.
			if _, ok := u.created[path.Join(dir, target)]; ok && !opaque {
				return nil
			}
			if u.rec != nil {
				return u.rec.whiteout(dir, target, opaque, nil)
			}
			return nil
		}
		return entryErr(name, "whiteout", err)
	}
	if opaque {
		fd, err := unix.Openat(pfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return entryErr(name, "opaque directory", err)
		}
		defer unix.Close(fd)
		prefix := dir + "/"
		if dir == "." {
			prefix = ""
		}
		var kept []string
		err = removeChildren(fd, func(child string) bool {
			_, ok := u.created[prefix+child]
			if ok {
				kept = append(kept, child)
			} else if u.rec != nil {
				u.rec.upper = false // empties what the layer made
			}
			return ok
		})
		u.invalidate()
		if err != nil {
			return entryErr(name, "opaque directory", err)
		}
		if u.rec != nil {
			return u.rec.whiteout(dir, "", true, kept)
		}
		return nil
	}
	if _, ok := u.created[path.Join(dir, target)]; ok {
		return nil // made by this layer: a whiteout hides the layers below only
	}
	if u.rec != nil {
		var st unix.Stat_t
		if unix.Fstatat(pfd, target, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			u.rec.upper = false // hides what the layer made
		}
	}
	if err := u.remove(pfd, target); err != nil {
		return entryErr(name, "whiteout", err)
	}
	if u.rec != nil {
		return u.rec.whiteout(dir, target, false, nil)
	}
	return nil
}
