//go:build !seccomp

package main

// buildTags are the tags berthctl is built with for the tests: the ones
// this test binary has.
const buildTags = ""
