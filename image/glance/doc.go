// Package glance keeps images in OpenStack Glance (image API v2), the
// store Nova takes images from.
//
// Push exports an image as a docker-save archive (which is also an OCI
// layout, so the manifest digest survives) and uploads it as a Glance
// image of container_format "docker" and disk_format "raw". Pull downloads
// a Glance image, checks it against Glance's own hash (os_hash_value, or
// the legacy MD5 checksum) while it streams, and imports it through the
// store's confined import: the same limits, digest checks and tag policy
// as a local archive, and nothing is committed unless Glance's hash
// matched (data-loss otherwise).
//
// The client speaks to Glance without authentication (a noauth
// deployment, or a Glance behind a proxy that authenticates); Options
// carries a token for a keystone-protected one.
package glance
