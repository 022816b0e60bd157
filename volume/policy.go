package volume

import (
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
)

// Policy is every rule berth applies to volumes, held by the runtime as one
// value. The zero value refuses everything; start from DefaultPolicy and
// relax it by name.
type Policy struct {
	// Filesystems is the whitelist of types that may be mounted on the
	// host, by Probe's names, plus "tmpfs". "ext4" also admits ext2 and
	// ext3, which the ext4 driver mounts.
	Filesystems []string
	// NoExec adds noexec to every volume mount (nosuid and nodev are
	// always forced).
	NoExec bool
	// Fsck runs the filesystem's own checker read-only (e2fsck -n -f,
	// xfs_repair -n) before mounting; a failure refuses the attach.
	Fsck bool
	// RawBlockWithoutUserNamespace allows raw-block volumes in containers
	// that share the host's user namespace, where root could mount the
	// device and feed the host kernel a crafted filesystem.
	RawBlockWithoutUserNamespace bool
}

// DefaultPolicy is what berth enforces unless told otherwise: ext4 (with
// ext2/ext3), xfs and tmpfs; no fsck; raw block only in user namespaces.
func DefaultPolicy() Policy {
	return Policy{Filesystems: []string{"ext4", "xfs", "tmpfs"}}
}

// Allow returns a copy of p that also admits the named filesystem types.
func (p Policy) Allow(types ...string) Policy {
	p.Filesystems = append(slices.Clone(p.Filesystems), types...)
	return p
}

// Validate checks that every type named in the whitelist is one berth
// knows, so a typo does not silently admit nothing.
func (p Policy) Validate() error {
	for _, t := range p.Filesystems {
		if t != "tmpfs" && driverOf(t) == "" {
			return fmt.Errorf("policy: filesystem %q is not mountable or unknown (known: %s): %w", t, strings.Join(KnownFilesystems(), ", "), errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// allows reports whether a probed type may be mounted.
func (p Policy) allows(typ string) bool {
	if slices.Contains(p.Filesystems, typ) {
		return true
	}
	// The ext4 driver serves ext2 and ext3: "ext4" admits the family.
	return (typ == "ext2" || typ == "ext3") && slices.Contains(p.Filesystems, "ext4")
}

// Check reports whether a probed filesystem may be host-mounted under p:
// invalid-argument naming the type when it may not.
func (p Policy) Check(fs Filesystem) error {
	if fs.Driver == "" {
		return fmt.Errorf("%s is not a mountable filesystem: %w", fs.Type, errdefs.ErrInvalidArgument)
	}
	if !p.allows(fs.Type) {
		return fmt.Errorf("filesystem type %q is not allowed (allowed: %s): %w", fs.Type, strings.Join(p.Filesystems, ", "), errdefs.ErrInvalidArgument)
	}
	return nil
}
