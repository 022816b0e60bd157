// Package volume attaches volumes to containers without letting a tenant's
// bytes reach the host kernel unchecked.
//
// Sources are host block devices (what os-brick leaves after connecting a
// Cinder volume), filesystem image files (attached to a loop device with
// LOOP_CONFIGURE: autoclear, no partition scan), host directories or
// already mounted shares (Manila-style), and tmpfs with a size.
//
// # Probe and policy
//
// Probe reads the superblock area and names the format (KnownFilesystems:
// ext2/3/4, xfs, btrfs, vfat, exfat, ntfs, squashfs, erofs, iso9660, swap,
// LUKS, DOS and GPT partition tables); tests compare it with `blkid -p`.
// Bytes with two valid signatures are ambiguous and refused, bytes with none
// are refused. A mountable format's geometry is then checked, a table of one
// function per format: block size and counts consistent with each other
// (thoroughly for ext2/3/4 and xfs, after the kernel's own checks), the
// filesystem no larger than the device and all on it (no external xfs log,
// no second btrfs device); a failure is ErrGeometry, so the kernel is never
// asked to mount a filesystem that does not fit. The device probed is the device mounted (the loop device
// holding the open image), and the mount names the probed type: the kernel
// never auto-detects. Policy is one value held by the runtime: the
// filesystem whitelist (default ext4, which also serves ext2 and ext3, xfs
// and tmpfs), forced nosuid and nodev (noexec optional), read-only mounts
// that also skip journal replay (noload, norecovery), an optional read-only
// fsck (e2fsck -n -f, xfs_repair -n) whose failure refuses the attach, and
// the raw-block rule. berth never formats a volume.
//
// # Modes
//
// Host-mount (the default for block devices and images) mounts the checked
// filesystem on the host under the state directory and binds it into the
// container; the container never holds the device. A read-only volume is
// mounted from a read-only loop device (over the block device, or the
// image), so that the kernel cannot write it: no orphan cleanup, journal
// replay or superblock update changes its bytes. A directory is bound from
// a mount berth makes of the opened directory (open_tree), nosuid and
// nodev down to its submounts.
//
// Read-only (Spec.ReadOnly) reaches every mount under a directory's
// source; with Spec.NonRecursiveReadOnly (what OCI's "ro" on a bind
// means, where "rro" is recursive) only the bind itself is read-only and
// the mounts under it keep their access, still nosuid and nodev.
//
// Spec.Propagation makes berth's mount of a directory or file private
// (the default), a slave of the source's mount (mounts the host makes
// under the source later reach the container: Kubernetes'
// HostToContainer) or its peer (they also go back: Bidirectional; the
// runtime admits it only under AllowPrivileged). The source's mount must
// propagate (shared, or a slave for a slave): failed-precondition
// otherwise. berth's mount is set so recursively, before and after it is
// moved into place (under a shared state directory the move makes it
// shared). Mounts that reach the container through propagation carry the
// flags whoever made them chose: berth forces nosuid and nodev only on
// the mounts present at attach. Unmounting a copy of a shared source
// would propagate to the host's own mounts under it, so every mount
// berth takes down is made private first.
//
// The host's mount namespace keeping a copy of the mounts under a source
// makes the host's rmdir of a directory it mounted something on fail
// (EBUSY) while the copy exists: once the engine has bound the source
// into the container's own mount namespace, and never binds it again,
// ReleaseHostBinds takes berth's mount off the host (the runtime does so
// on engines with driver.Capabilities.BindsAtCreate).
//
// # Sources
//
// A source is resolved once, then opened without following links and
// without blocking, and checked on the opened file: still the kind it was
// (a FIFO or link swapped in is refused), and, for files and directories,
// not on a kernel interface filesystem (proc, sysfs, cgroup, devtmpfs...)
// nor holding one. Probe also checks each format's geometry: a
// superblock that claims more than the device holds is refused before any
// mount. Read-only attachments of
// one source share one host mount, counted by their records; a read-write
// block or image volume is exclusive, and a block device the host has
// mounted is refused.
//
// Raw-block exposes a device node made for the container, owned by its
// mapped root, and allowed in its devices cgroup: the node of a loop device
// berth binds over the source (an image file or a block device alike), so
// that the container never holds the source itself and anything of its
// keeps the loop's binding, which other attaches see. It is only allowed for a
// container with its own user namespace, where the kernel refuses to mount
// block filesystems; without one it is failed-precondition unless
// Policy.RawBlockWithoutUserNamespace says otherwise.
//
// # Release
//
// Detach returns once nothing of the attachment is left on the host: its
// mount, its mount point, and an image's loop device, which the kernel
// frees only when the last holder of the filesystem lets go. Removing the
// mount point also detaches the copies of the mount that mount namespaces
// made meanwhile (a container being set up copies every host mount). What
// can still hold the filesystem is a namespace with a mount of its own of
// it, such as a container's bind, until the last process or thread in that
// namespace leaves. Detach waits for the kernel's event that the device is
// free, within its context; when the context ends first it fails, naming
// the holders, with everything of berth's undone: the device goes with its
// last holder.
//
// # One host
//
// Block devices and image files are claimed host-wide (HostClaimsDir),
// whatever the manager's directory: a source one state root holds
// read-write or raw is refused under every other, as under its own; only
// read-only host mounts share.
//
// # Crash safety
//
// Manager writes each attachment's record before it acts and marks it
// complete after; OpenManager in the next process undoes incomplete ones
// and, given a liveness check, those of containers that no longer exist.
// Loop devices of host mounts are autoclear (the mount holds them), loop
// devices of raw images are found again by their backing file: a process
// killed at any point leaks no mount, loop device or node.
package volume
