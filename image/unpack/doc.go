// Package unpack applies image layers (uncompressed tar streams) to a
// directory without letting any entry reach outside it.
//
// Every path is resolved by the kernel under the root with openat2(2)
// RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV: ".." cannot climb
// above the root, an absolute name is taken relative to it, and no parent
// directory is ever reached through a symlink (an entry that would write
// through one, planted by this or an earlier layer, is refused). The last
// element of a name is created with the *at system calls relative to its
// parent's descriptor, with O_NOFOLLOW and O_EXCL, so an existing symlink
// is replaced, never followed. Hardlink targets are resolved the same way.
//
// Layers are applied in order with OCI whiteouts: ".wh.NAME" removes NAME
// from the layers below, ".wh..wh..opq" empties its directory of what the
// layers below put there. Device nodes are dropped and setuid/setgid bits
// cleared (with security.capability) unless Options allow them; trusted.*
// extended attributes are always dropped. Ownership is applied when the
// process is root.
//
// A LayerUnpacker unpacks one layer on its own, entry by entry, as it
// streams in (an import reads the layers in the archive's order, before
// it knows the image's); Merge then lays such layers over each other by
// moving their files, after checking that this gives the tree applying
// them in order gives, and ErrMergeConflict (nothing changed) when it
// cannot tell: the caller applies that layer's stream instead.
package unpack
