// Package layer reads image layers, the tar streams an image's root
// filesystem is made of, without trusting them.
//
// Analyze reads a blob once, as it streams: it computes the blob's digest,
// detects its compression (gzip, zstd or none), decompresses it with a
// bound on the decompressed size and on the decompression ratio, computes
// the layer's diff ID (the digest of the uncompressed tar) and checks every
// entry with CheckHeader: no name may climb out of the root with "..", no
// entry may write through a symlink that the same layer planted, only the
// usual entry types are accepted, and names are bounded in length and
// depth.
//
// A blob that turns out not to be a layer is not an error for Analyze (an
// archive also holds configs and manifests): Info.NotLayer says why, and
// the caller refuses it only if something uses it as a layer. Exceeding a
// limit is an error at once (resource-exhausted), so that a bomb stops the
// read early.
package layer
