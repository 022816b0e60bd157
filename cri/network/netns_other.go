//go:build !linux

package network

import "errors"

var (
	errNotNetNS  = errors.New("not a network namespace")
	errHostNetNS = errors.New("the caller's own network namespace, not a pod's")
	errPinned    = errors.New("pinned already")
)

// Network namespaces are Linux's.

func openNetNS(string) (int, error) { return -1, errNotNetNS }
func isNetNS(string) bool           { return false }
func pinNetNS(int, string) error    { return errNotNetNS }
func unpinNetNS(string) error       { return nil }
