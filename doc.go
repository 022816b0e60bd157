// Package berth is the root of berth's module: a library that runs
// containers through one portable API (package runtime) over a choice of
// engines (backends/libcontainer, backends/docker, backends/parallels),
// and owns what engines leave to their callers: volumes (package volume)
// and images (package image).
//
// The package itself holds no code; its test enforces the layering that
// docs/design.md describes.
package berth
