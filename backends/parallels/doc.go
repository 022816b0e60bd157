// Package parallels is berth's disk-image engine, after Virtuozzo/OpenVZ
// (Parallels) ploop: each container's root filesystem lives in an ext4 or
// xfs image file of its own that the host mounts, so the disk has a quota
// by construction, grows online, and can be snapshotted and moved as one
// file.
//
// # How a container is made
//
// The engine is a driver.DiskMaker: the runtime (runtime.New) owns every
// root disk, and the engine only fills new ones. For a create, the runtime
// asks MakeDisk for a sparse image file of the requested size (DiskSize,
// default 1 GiB) under its state directory, which MakeDisk fills with
// mkfs.ext4 -d (or an mkfs.xfs protofile) from the root filesystem
// directory or the image's tree, so untrusted content is never mounted to
// be populated. The runtime then attaches the image through its one volume
// manager, under its one policy (runtime.WithVolumePolicy), like any
// volume (package volume): loop device, superblock probe, whitelist and
// optional fsck, mounted nosuid,nodev on the host. Create gets the mounted
// path and the image file, and runs the container there with the embedded
// libcontainer engine (package backends/libcontainer), user namespaces
// and shared namespaces (runtime.Config.Join, among this engine's
// containers) included. A container can also adopt an existing image file
// (Config.RootDisk): a snapshot, or a disk moved from another root; the
// runtime links or copies it into its state directory, and the same policy
// applies.
//
// # Disk operations
//
//   - ResizeDisk grows the file, tells the loop device (LOOP_SET_CAPACITY)
//     and runs resize2fs (xfs_growfs) on the mounted filesystem: the
//     container sees the space at once.
//   - SnapshotDisk copies the image consistently while the container runs:
//     the cgroup and the filesystem are frozen (FIFREEZE flushes the
//     journal), the file is cloned (FICLONE) or copied sparsely, then both
//     thaw. Container.Snapshot archives such a copy as a tar stream, which
//     the runtime can commit as an image: the runtime attaches the copy
//     read-only through its volume manager, archives it, and drops it.
//   - runtime.Container.Export writes a stopped container's disk and
//     config to a directory; after the container is deleted here,
//     runtime.Runtime.Import creates it again on another root from them,
//     which moves the disk (a cold move). The runtime does both over
//     SnapshotDisk and Config.RootDisk: any backend with root disks can.
//
// Disk.Snapshot (SnapshotDisk), reached through runtime.Container.As, is
// not serialized with the runtime's Delete or ResizeDisk of the same
// container.
//
// # State
//
// Under the root given to Open, parallels/ holds the embedded engine's
// state (containers/, runc/); the spec it keeps for a container names the
// container's disk image (an annotation that State and List hide). The
// disks (<stateDir>/disks/<id>/disk.img) and their attach records
// (<stateDir>/volumes) are the runtime's, and the runtime cleans up after a
// crash at any point when it is opened next.
//
// The container's output, its kept log, its CRI log file
// (runtime.Config.CRILog, reopened with ReopenCRILog), its terminals and
// attachments (Attacher: Attach and ResizeTerminal, and exec with a
// terminal) are the embedded engine's: see package backends/libcontainer.
//
// Runtime.As accepts **Runtime. runtime.Container.As accepts **Disk: the
// container's root disk, its image file (Disk.Image) and consistent copies
// of it (Disk.Snapshot). The backend implements every optional driver
// interface (NamespaceOpener and Attacher included) but Snapshotter and EventSource: the runtime archives
// SnapshotDisk copies itself, and watches the containers for its events
// (runtime.Runtime.Events) as on the embedded engine, OOM kills included.
package parallels
