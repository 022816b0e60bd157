// Package image is berth's image store: docker-save archives and OCI image
// layouts imported with hard limits and tag confinement into a local
// content-addressed store, unpacked safely, and exported again.
//
// The threat model is a multi-tenant cloud where tenants upload image
// archives (to Glance, say). An archive is never trusted:
//
//   - Import verifies every blob's digest and every layer's diff ID while it
//     streams, caps JSON documents, refuses paths that leave the archive,
//     checks every layer entry (no "..", no write through a planted
//     symlink, only the usual entry types), and enforces Limits: total
//     compressed and uncompressed bytes, decompression ratio, entries per
//     layer, path length and depth, layers per image. Exceeding one stops
//     the import at once (resource-exhausted).
//   - TagPolicy decides which tags an import creates: by default none (the
//     image is kept by digest), else the expected ones or all of them under
//     a prefix; an existing tag never moves unless AllowRetag. The archive
//     cannot re-point the host's "ubuntu:latest".
//   - A failed or killed import leaves the store as it was: everything is
//     staged in a private directory and committed in one atomic step under
//     a file lock, so imports from several processes are safe.
//   - Unpack (package unpack) resolves every path in the root with
//     openat2; device nodes and setuid bits are dropped unless allowed.
//     UnpackExt4 builds an ext4 image file with mkfs.ext4 -d, never
//     mounting untrusted content. Rootfs keeps one unpacked tree per image
//     for containers to share read-only, setuid/setgid bits and file
//     capabilities cleared.
//   - Import unpacks the layers in the pass that writes and verifies them
//     (each layer on its own as it streams in, in the archive's order;
//     each new image's tree put together from them once the documents
//     say which layers it has, by moving files), and keeps the tree for
//     the image's first Rootfs or Unpack, which then only rename it. What
//     the import accepts is decided by the blobs, as before: a layer that
//     fails to unpack on its own is only unpacked later, from its blob,
//     with the same checks. ImportOptions.NoRootfs keeps the blobs only.
//   - WithSetidRootfs is the switch that keeps them in Rootfs' trees, as
//     Docker and containerd do (Kubernetes workloads expect a setuid
//     program to work where no_new_privs is off). Such trees are a kind
//     of their own, kept apart (rootfs-setid/): a store opened without
//     the switch, in any process, never gives one, and one opened with it
//     never gives a tree without the bits. With it, a tenant's setuid
//     programs and file capabilities take effect in its containers unless
//     no_new_privs is set: any user there can become the container's root.
//
// Error classes (github.com/containerd/errdefs), each wrapped with the
// archive, image reference or entry concerned:
//
//   - invalid-argument: a malformed or hostile archive, a bad reference.
//     A digest that does not match the content it names is one too: the
//     input lied.
//   - data-loss: a blob of the store no longer matches its digest (a disk
//     that rotted, a power loss without WithFsync); every read checks.
//   - resource-exhausted: a limit was exceeded.
//   - already-exists: an import would move a tag that names another image
//     and AllowRetag is not set (the same class containerd's image service
//     gives a name that exists). Also Unpack into an existing directory.
//   - not-found: no such image or archive.
//   - failed-precondition: a config digest shared by several images, a
//     rootfs holder that already holds another image.
//
// Pull takes an image from a Remote (a registry) through the same path
// as Import: blobs by descriptor, each checked against its digest and
// size as it streams; blobs the store holds are not fetched again, and
// concurrent pulls of one blob fetch it once. Tag adds a tag; OpenContent
// opens an image for a push.
//
// Format packages sit beside: layer (reading layers), unpack (applying
// them), dockersave and ocilayout (the archives' documents), registry
// (OCI distribution registries: pull, push, mirrors, credentials), glance
// (OpenStack Glance as a remote store), imagetest (archives for tests) and
// validate (invariants tests check).
package image
