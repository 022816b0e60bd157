package driver

import (
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// HasUserNamespace reports whether spec asks for a user namespace of the
// container's own: the one test berth and its backends make of it.
func HasUserNamespace(s *specs.Spec) bool {
	if s == nil || s.Linux == nil {
		return false
	}
	return slices.ContainsFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.UserNamespace })
}
