package volume

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/docker/go-units"
)

// Kind is what a volume's source is.
type Kind string

// The sources berth attaches.
const (
	// KindBlock is a host block device (what os-brick leaves after
	// connecting a Cinder volume).
	KindBlock Kind = "block"
	// KindImage is a filesystem image file, attached on a loop device.
	KindImage Kind = "image"
	// KindDir is a host directory or an already mounted share (Manila).
	KindDir Kind = "dir"
	// KindFile is a host regular file bound into the container as it is
	// (a spec's bind of a file), never attached to a loop device. Give it
	// explicitly: a regular file is otherwise an image.
	KindFile Kind = "file"
	// KindTmpfs is a fresh tmpfs of a given size.
	KindTmpfs Kind = "tmpfs"
)

// Mode is how a block device or image reaches the container.
type Mode string

// The modes.
const (
	// ModeHostMount (the default) mounts the filesystem on the host after
	// the probe, the policy and the optional fsck, and binds the mount
	// into the container: the container never holds the device.
	ModeHostMount Mode = "host-mount"
	// ModeRawBlock exposes the device node itself, owned by the
	// container's root; allowed only in a user namespace unless the policy
	// says otherwise.
	ModeRawBlock Mode = "raw-block"
)

// Propagation is how mounts travel between a directory or file source
// on the host and the container's bind of it, whatever lies under it: the
// OCI bind options rprivate, rslave and rshared, Kubernetes' None,
// HostToContainer and Bidirectional. berth's own mount of the source (see
// Modes in the package documentation) takes it, recursively.
type Propagation string

// The propagations.
const (
	// PropagationPrivate (the default, also "") propagates nothing: the
	// container sees the mounts under the source as they were at attach.
	PropagationPrivate Propagation = "private"
	// PropagationSlave carries mounts the host makes under the source
	// later into the container, never the reverse. The source must be on
	// a shared mount (or a slave of one): failed-precondition otherwise.
	PropagationSlave Propagation = "slave"
	// PropagationShared carries mounts both ways: what a container that
	// can mount (CAP_SYS_ADMIN) mounts under its bind appears on the host
	// under the source, with the flags the container chose (a setuid
	// binary, a device node). The source must be on a shared mount
	// (failed-precondition otherwise). The runtime admits it only under
	// its AllowPrivileged policy.
	PropagationShared Propagation = "shared"
)

// Spec asks for one volume.
type Spec struct {
	// Source is the host path (block device, image file, directory); empty
	// for tmpfs.
	Source string
	// Destination is the absolute path inside the container.
	Destination string
	// ReadOnly mounts the volume read-only; a directory's bind is
	// read-only down to every mount under its source, unless
	// NonRecursiveReadOnly.
	ReadOnly bool
	// NonRecursiveReadOnly, with ReadOnly, makes a directory or file bind
	// read-only at its top alone: mounts under the source keep their own
	// access (OCI's "ro" on a bind, where "rro" is recursive). nosuid and
	// nodev still reach every one.
	NonRecursiveReadOnly bool `json:",omitempty"`
	// Propagation of a directory or file source ("" is private).
	Propagation Propagation `json:",omitempty"`
	Mode        Mode
	// Kind is found from Source when empty.
	Kind Kind
	// TmpfsSize is the size of a tmpfs volume in bytes (0: the kernel's
	// default of half the RAM is refused; give a size).
	TmpfsSize int64
}

// ParseSpec reads the command-line form SRC:DST[:ro][:raw], or
// tmpfs:DST[:size=BYTES][:ro] for a tmpfs. A directory may also take
// rprivate, rslave or rshared (Propagation).
func ParseSpec(s string) (Spec, error) {
	bad := func(format string, a ...any) (Spec, error) {
		return Spec{}, fmt.Errorf("volume %q: %s: %w", s, fmt.Sprintf(format, a...), errdefs.ErrInvalidArgument)
	}
	parts := strings.Split(s, ":")
	if len(parts) < 2 {
		return bad("want SRC:DST[:ro][:raw]")
	}
	sp := Spec{Source: parts[0], Destination: parts[1], Mode: ModeHostMount}
	if sp.Source == "tmpfs" {
		sp.Source, sp.Kind = "", KindTmpfs
	}
	for _, opt := range parts[2:] {
		switch {
		case opt == "ro":
			sp.ReadOnly = true
		case opt == "rw":
		case opt == "raw":
			sp.Mode = ModeRawBlock
		case PropagationOf(opt) != "":
			sp.Propagation = PropagationOf(opt)
		case strings.HasPrefix(opt, "size=") && sp.Kind == KindTmpfs:
			n, err := ParseBytes(strings.TrimPrefix(opt, "size="))
			if err != nil {
				return bad("%v", err)
			}
			sp.TmpfsSize = n
		default:
			return bad("unknown option %q", opt)
		}
	}
	return sp, nil
}

// ParseBytes reads a size in bytes: a non-negative integer, optionally
// followed by a binary unit k, m, g, t or p (powers of 1024, any case),
// itself optionally followed by b or ib: 64m, 64M, 64MB and 64MiB are all
// 64<<20. A bare b means bytes. Signs, fractions, exponents and spaces are
// refused, as is a size beyond int64. It is go-units' RAMInBytes restricted
// to integers; berth's other byte-size flags and options use it.
func ParseBytes(v string) (int64, error) {
	bad := func() (int64, error) {
		return 0, fmt.Errorf("size %q: want BYTES, an integer with an optional k, m, g, t or p suffix (powers of 1024)", v)
	}
	if v == "" || v[0] < '0' || v[0] > '9' || strings.ContainsAny(v, ".+-eE ") {
		return bad()
	}
	n, err := units.RAMInBytes(v)
	// RAMInBytes computes in float64: a size beyond int64 comes out
	// negative, or saturated on some architectures.
	if err != nil || n < 0 || n == math.MaxInt64 {
		return bad()
	}
	return n, nil
}

// PropagationOf returns the propagation an OCI mount option names
// (private, rprivate, slave, rslave, shared, rshared), or "" for any
// other option. berth's own mount of the source takes it recursively,
// whichever form was given.
func PropagationOf(opt string) Propagation {
	switch strings.TrimPrefix(opt, "r") {
	case "private":
		return PropagationPrivate
	case "slave":
		return PropagationSlave
	case "shared":
		return PropagationShared
	}
	return ""
}

// resolve checks the spec and fills in Kind from the source.
func (s Spec) resolve() (Spec, error) {
	if !filepath.IsAbs(s.Destination) || filepath.Clean(s.Destination) != s.Destination {
		return Spec{}, s.invalid("destination %q must be a clean absolute path", s.Destination)
	}
	if s.Mode == "" {
		s.Mode = ModeHostMount
	}
	if s.Mode != ModeHostMount && s.Mode != ModeRawBlock {
		return Spec{}, s.invalid("unknown mode %q", s.Mode)
	}
	switch s.Propagation {
	case "", PropagationPrivate, PropagationSlave, PropagationShared:
	default:
		return Spec{}, s.invalid("unknown propagation %q", s.Propagation)
	}
	if s.NonRecursiveReadOnly && !s.ReadOnly {
		return Spec{}, s.invalid("non-recursive read-only without read-only")
	}
	if s.Kind == KindTmpfs || (s.Kind == "" && s.Source == "") {
		return s.resolveTmpfs()
	}
	if !filepath.IsAbs(s.Source) {
		return Spec{}, s.invalid("source %q is not an absolute path", s.Source)
	}
	real, kind, err := s.realSource()
	if err != nil {
		return Spec{}, err
	}
	s.Source = real
	if s.Kind != "" && s.Kind != kind {
		return Spec{}, s.invalid("source %s is a %s, not a %s", s.Source, kind, s.Kind)
	}
	s.Kind = kind
	bound := s.Kind == KindDir || s.Kind == KindFile
	if bound && s.Mode == ModeRawBlock {
		return Spec{}, s.invalid("a %s cannot be raw", s.Kind)
	}
	if !bound && (s.hasPropagation() || s.NonRecursiveReadOnly) {
		return Spec{}, s.invalid("propagation and non-recursive read-only are for directories and files, not a %s", s.Kind)
	}
	return s, nil
}

// hasPropagation reports whether the spec asks mounts to propagate.
func (s Spec) hasPropagation() bool {
	return s.Propagation != "" && s.Propagation != PropagationPrivate
}

// invalid is an invalid-argument error about the volume.
func (s Spec) invalid(format string, a ...any) error {
	return fmt.Errorf("volume %s: %s: %w", s.Destination, fmt.Sprintf(format, a...), errdefs.ErrInvalidArgument)
}

// resolveTmpfs checks a tmpfs volume.
func (s Spec) resolveTmpfs() (Spec, error) {
	s.Kind = KindTmpfs
	if s.Source != "" {
		return Spec{}, s.invalid("a tmpfs has no source")
	}
	if s.TmpfsSize <= 0 {
		return Spec{}, s.invalid("a tmpfs needs a size")
	}
	if s.Mode == ModeRawBlock {
		return Spec{}, s.invalid("a tmpfs cannot be raw")
	}
	if s.hasPropagation() || s.NonRecursiveReadOnly {
		return Spec{}, s.invalid("propagation and non-recursive read-only are for directories and files, not a tmpfs")
	}
	return s, nil
}

// realSource returns the source's real path and what it is there.
//
// The operator names a block device often by a link under /dev
// (/dev/disk/by-path/... from os-brick): resolve it once, and work on
// what it names. Any other source must be named by its real path: a
// link in a directory a tenant can write (a share, a subPath) would
// take the volume wherever the tenant points it, /etc or another
// tenant's disk.
func (s Spec) realSource() (string, Kind, error) {
	real, err := filepath.EvalSymlinks(s.Source)
	if errors.Is(err, os.ErrNotExist) {
		return "", "", fmt.Errorf("volume %s: source %s: %w", s.Destination, s.Source, errdefs.ErrNotFound)
	}
	if err != nil {
		return "", "", s.invalid("source: %v", err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", "", s.invalid("source: %v", err)
	}
	var kind Kind
	switch {
	case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		kind = KindBlock
	case fi.Mode().IsRegular():
		kind = KindImage
	case fi.IsDir():
		kind = KindDir
	default:
		return "", "", s.invalid("source %s is neither a block device, a file nor a directory", real)
	}
	if s.Kind == KindFile && kind == KindImage {
		kind = KindFile
	}
	if given := filepath.Clean(s.Source); real != given && (kind != KindBlock || !strings.HasPrefix(given, "/dev/")) {
		return "", "", s.invalid("source %s leads through a link (to %s): name it by its real path (only block devices under /dev may be named by a link)", given, real)
	}
	return real, kind, nil
}
