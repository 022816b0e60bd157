// Package ocilayout reads and writes the pieces of an OCI image layout
// (oci-layout, index.json, blobs/ALG/HEX) without trusting them: documents
// are checked for the fields berth relies on, descriptors must carry valid
// digests and sizes, and blob paths are derived from digests only.
package ocilayout
