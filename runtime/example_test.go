package runtime_test

import (
	"fmt"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/runtime"
)

// The same ID names a directory, a cgroup and a Docker container, so it is
// checked once, in the portable layer, before any backend sees it.
func ExampleValidateID() {
	for _, id := range []string{"web-1", "../etc", "-rm"} {
		err := runtime.ValidateID(id)
		fmt.Printf("%q invalid: %v\n", id, errdefs.IsInvalidArgument(err))
	}
	// Output:
	// "web-1" invalid: false
	// "../etc" invalid: true
	// "-rm" invalid: true
}

// DefaultSpec is what a container gets when the caller has no opinion:
// private namespaces, Docker's default capabilities, no new privileges.
func ExampleDefaultSpec() {
	spec := runtime.DefaultSpec("/srv/rootfs", "/bin/sh", "-c", "echo hi")
	var namespaces []specs.LinuxNamespaceType
	for _, ns := range spec.Linux.Namespaces {
		namespaces = append(namespaces, ns.Type)
	}
	fmt.Println("namespaces:", namespaces)
	fmt.Println("capabilities:", len(spec.Process.Capabilities.Bounding))
	fmt.Println("no new privileges:", spec.Process.NoNewPrivileges)
	// Output:
	// namespaces: [pid ipc uts mount network cgroup]
	// capabilities: 14
	// no new privileges: true
}

// Every container runs under seccomp: the caller's profile, which may only
// narrow this one, or this one. It denies the loop device's ioctls
// whatever the profile says.
func ExampleDefaultSeccompProfile() {
	spec := runtime.DefaultSpec("/srv/rootfs", "/bin/true")
	profile, err := runtime.DefaultSeccompProfile(spec)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("default action:", profile.DefaultAction)
	fmt.Println("architectures:", profile.Architectures)
	// Output:
	// default action: SCMP_ACT_ERRNO
	// architectures: [SCMP_ARCH_X86_64]
}
