package runtime

import (
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// defaultSeccomp is Docker's default profile for the spec's capabilities
// and the host's architecture: among much else, it keeps a container
// without CAP_SYS_ADMIN from making user namespaces (unshare -U), mounting
// or loading kernel modules.
func defaultSeccomp(s *specs.Spec) (*specs.LinuxSeccomp, error) {
	sc, err := seccomp.GetDefaultProfile(s)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, errdefs.ErrInternal)
	}
	return sc, nil
}
