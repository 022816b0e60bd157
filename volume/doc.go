// Package volume will own berth's volumes: block devices, filesystem image
// files, host directories and shares attached to containers, with a
// filesystem-type whitelist checked on the superblock before any mount, raw
// block devices exposed only to user-namespaced containers, and crash-safe
// attach records so that no mount or loop device is ever leaked.
//
// The portable runtime layer applies it, so no backend can bypass it. It is
// being built; see the volumes issue.
package volume
