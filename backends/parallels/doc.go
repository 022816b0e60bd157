// Package parallels is berth's disk-image engine, after Virtuozzo/OpenVZ
// (Parallels) ploop: each container's root filesystem lives in an ext4
// image file of its own that the host mounts, so the disk has a quota by
// construction, grows online, and can be snapshotted and moved as one file.
//
// # How a container is made
//
// Create makes a sparse image file of the requested size (DiskSize, default
// 1 GiB) and fills it with mkfs.ext4 -d from the root filesystem directory,
// so untrusted content is never mounted to be populated. The image is then
// attached like any volume (package volume): loop device, superblock probe,
// whitelist and optional fsck (the policy given with WithPolicy: give the
// runtime's), mounted nosuid,nodev on the host. The container runs on that mount with the embedded libcontainer
// engine (package backends/libcontainer), user namespaces included. A
// container can also adopt an existing image file (Config.RootDisk): a
// snapshot, or a disk moved from another root.
//
// # Disk operations
//
//   - ResizeDisk grows the file, tells the loop device (LOOP_SET_CAPACITY)
//     and runs resize2fs on the mounted filesystem: the container sees the
//     space at once.
//   - SnapshotDisk copies the image consistently while the container runs:
//     the cgroup and the filesystem are frozen (FIFREEZE flushes the
//     journal), the file is cloned (FICLONE) or copied sparsely, then both
//     thaw. Snapshot archives such a copy as a tar stream, which the
//     runtime can commit as an image.
//   - Export writes a stopped container's disk and spec to a directory;
//     after the container is deleted here, another root creates it again
//     from them (ReadExport, Config.RootDisk), which moves the disk.
//
// # State
//
// Under the root given to Open: parallels/ holds the embedded engine's
// state (containers/, runc/), parallels/disks/<id>/disk.img the disks and
// parallels/disks/volumes the attach records, so that a crash at any point
// is cleaned up by the next Open.
//
// Runtime.As accepts **Runtime.
package parallels
