package unpack

import (
	"archive/tar"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// owned reports whether the entry needs a chown: its owner is not the
// creator's (root) and the process may change it.
func (u *Unpacker) owned(h *tar.Header) bool {
	return u.chown && (h.Uid != 0 || h.Gid != 0)
}

// perm is the entry's permission bits after policy: setuid and setgid
// cleared on non-directories unless allowed (a setgid directory only
// passes its group on).
func (u *Unpacker) perm(h *tar.Header, isDir bool) uint32 {
	perm := uint32(h.Mode) & 0o7777
	if isDir {
		return perm &^ unix.S_ISUID
	}
	if perm&(unix.S_ISUID|unix.S_ISGID) != 0 && !u.opts.AllowSetid {
		perm &^= unix.S_ISUID | unix.S_ISGID
		u.stats.SetidCleared++
	}
	return perm
}

// metaPlan is what to set on a file or directory once it is open,
// decided (and counted) by the applying goroutine, applied by whichever
// goroutine writes the file.
type metaPlan struct {
	chown    bool
	uid, gid int
	chmod    bool
	perm     uint32
	xattrs   [][2]string
}

// plan decides owner, mode (perm, always when force is set) and extended
// attributes of an entry. Mode comes after owner when applied: chown
// clears setuid bits.
func (u *Unpacker) plan(h *tar.Header, perm uint32, force bool) metaPlan {
	m := metaPlan{chown: u.owned(h), uid: h.Uid, gid: h.Gid, perm: perm}
	m.chmod = force || m.chown || perm&^0o777 != 0 || perm&u.umask != 0
	for k, v := range h.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		if strings.HasPrefix(name, "trusted.") {
			u.stats.XattrsDropped++
			continue
		}
		if name == "security.capability" && !u.opts.AllowSetid {
			u.stats.SetidCleared++
			continue
		}
		m.xattrs = append(m.xattrs, [2]string{name, v})
	}
	return m
}

// apply sets the planned metadata on fd; it returns how many extended
// attributes the file system did not support.
func (m *metaPlan) apply(fd int) (int, error) {
	if m.chown {
		if err := unix.Fchown(fd, m.uid, m.gid); err != nil {
			return 0, err
		}
	}
	if m.chmod {
		if err := unix.Fchmod(fd, m.perm); err != nil {
			return 0, err
		}
	}
	unsupported := 0
	for _, x := range m.xattrs {
		if err := unix.Fsetxattr(fd, x[0], []byte(x[1]), 0); err != nil {
			if err == unix.ENOTSUP || err == unix.EOPNOTSUPP {
				unsupported++
				continue
			}
			return unsupported, fmt.Errorf("xattr %q: %w", x[0], err)
		}
	}
	return unsupported, nil
}

// meta plans and applies metadata on an open file or directory.
func (u *Unpacker) meta(fd int, h *tar.Header, perm uint32, force bool) error {
	m := u.plan(h, perm, force)
	n, err := m.apply(fd)
	u.stats.XattrsDropped += n
	return err
}

func times(h *tar.Header) [2]unix.Timespec {
	m := h.ModTime
	a := h.AccessTime
	if a.IsZero() {
		a = m
	}
	return [2]unix.Timespec{ts(a), ts(m)}
}

func ts(t time.Time) unix.Timespec {
	if t.IsZero() {
		return unix.Timespec{}
	}
	return unix.NsecToTimespec(t.UnixNano())
}

// futimens sets an open file's times (utimensat with a NULL path).
func futimens(fd int, ts [2]unix.Timespec) error {
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// readUmask reads the process's umask without changing it (umask(2)
// would, for every thread, for a moment). When it cannot be read, every
// mode is set explicitly.
func readUmask() uint32 {
	b, err := os.ReadFile("/proc/self/status")
	if err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Umask:"); ok {
				if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
					return uint32(m)
				}
			}
		}
	}
	return 0o777
}
