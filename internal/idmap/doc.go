// Package idmap makes ID-mapped bind mounts: a view of a directory in which
// file owners are shifted by a user namespace's mapping, without touching
// the files themselves.
//
// berth uses it to let root in a user-namespaced container (host UID
// 100000, say) own its root filesystem, which on disk belongs to host root.
// It is O(1) whatever the size of the tree, leaves the source unchanged, and
// files the container creates land on disk with the unshifted owners, just
// as they would without a user namespace.
package idmap
