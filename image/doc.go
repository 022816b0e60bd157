// Package image will own berth's images: docker-save and OCI archives
// imported with hard limits and tag confinement into a local
// content-addressed store, safely unpacked, exported, and kept in Glance or
// a registry. It is being built; see the images issue.
package image
