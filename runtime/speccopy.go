package runtime

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/internal/deepcopy"
)

// copySpec deep-copies a spec a backend handed out (one that went through
// JSON already), field by field: what Info gives its caller is the
// caller's own. cloneSpec's round trip through JSON, which Create needs to
// refuse what JSON cannot carry, cost a container's status more than the
// rest of it.
func copySpec(s *specs.Spec) *specs.Spec {
	if s == nil {
		return nil
	}
	return deepcopy.Of(s)
}
