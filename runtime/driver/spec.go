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

// UnfilteredSeccomp reports whether sc is the profile that means no
// seccomp filter at all: it allows every call by default and says nothing
// else (no rules, architectures, flags, errno or agent). The portable
// layer hands a backend such a profile only under the runtime's
// AllowUnfilteredSeccomp policy switch (otherwise every profile carries
// the loop device rules), and the backend then runs the container's
// processes without any filter, where an engine given the profile as it is
// would install one that allows everything.
func UnfilteredSeccomp(sc *specs.LinuxSeccomp) bool {
	return sc != nil && sc.DefaultAction == specs.ActAllow && sc.DefaultErrnoRet == nil &&
		len(sc.Architectures) == 0 && len(sc.Flags) == 0 && len(sc.Syscalls) == 0 &&
		sc.ListenerPath == "" && sc.ListenerMetadata == ""
}
