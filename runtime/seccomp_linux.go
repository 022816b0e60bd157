package runtime

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/profiles/seccomp"
	"github.com/moby/sys/capability"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// defaultSeccomp is Docker's default profile for the spec's capabilities:
// among much else, it keeps a container without CAP_SYS_ADMIN from making
// user namespaces (unshare -U), mounting or loading kernel modules.
//
// Unlike Docker's, it admits the host's native system call ABI only:
// 32-bit (int 0x80) and x32 calls kill the calling thread. Their compat
// paths are kernel code a tenant has no need to reach, and compiling the
// filter for three ABIs costs each container start about 20 ms of CPU in
// libseccomp (scripts/bench-run.sh). A caller who runs 32-bit programs
// gives the profile it wants in the spec.
func defaultSeccomp(s *specs.Spec) (*specs.LinuxSeccomp, error) {
	if s.Process == nil || s.Process.Capabilities == nil {
		// No capability sets: the process keeps them all (a privileged
		// spec), and the profile is the one for every capability.
		c := *s
		p := specs.Process{}
		if s.Process != nil {
			p = *s.Process
		}
		var all []string
		for _, cp := range capability.ListKnown() {
			all = append(all, "CAP_"+strings.ToUpper(cp.String()))
		}
		p.Capabilities = &specs.LinuxCapabilities{Bounding: all, Effective: all, Permitted: all}
		c.Process = &p
		s = &c
	}
	sc, err := seccomp.GetDefaultProfile(s)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, errdefs.ErrInternal)
	}
	if len(sc.Architectures) > 1 {
		sc.Architectures = sc.Architectures[:1] // native first, then the sub-architectures
	}
	return sc, nil
}
