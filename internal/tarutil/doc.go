// Package tarutil writes a directory tree as an uncompressed tar stream, the
// way a container's root filesystem becomes an image layer.
package tarutil
