// Package imagetest builds image archives for tests and examples: layers
// from entries or from a directory (such as internal/fixture's busybox root
// filesystem), and docker-save or OCI layout archives around them, well
// formed or, entry by entry, as hostile as a test needs.
package imagetest
