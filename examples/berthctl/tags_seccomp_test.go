//go:build seccomp

package main

// buildTags are the tags berthctl is built with for the tests: the ones
// this test binary has, so the CLI confines containers as the library does.
const buildTags = "seccomp"
