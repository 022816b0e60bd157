//go:build !linux

package runtime

import (
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// defaultSeccomp: containers run on Linux only.
func defaultSeccomp(s *specs.Spec) (*specs.LinuxSeccomp, error) {
	return nil, errdefs.ErrNotImplemented
}
