// Package dockersave reads and writes the manifest.json of `docker save`
// archives (formats 1.1 and 1.2, and the docker 25 form that also holds an
// OCI layout), without trusting it: every path it names must stay inside
// the archive, and foreign layers (fetched from URLs) are refused.
package dockersave
