// Package kernfs tells whether an open file lies on a kernel interface
// filesystem (proc, sysfs, cgroup, devtmpfs, debugfs, bpf...): files there
// are controls of the host kernel, not data, and are never bound into a
// container. The decision is made on the opened file — its filesystem
// magic (fstatfs) and the type of the mount that holds it, found by mount
// ID — never on a path a tenant could swap.
package kernfs
