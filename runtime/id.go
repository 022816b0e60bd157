package runtime

import (
	"fmt"
	"regexp"

	"github.com/containerd/errdefs"
)

// idPattern is the one definition of a valid container ID: it is used as a
// directory name, a cgroup name and a Docker name, so it must be safe in all.
var idPattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$`)

// ValidateID reports whether id can name a container: 1 to 64 characters
// from [a-zA-Z0-9_.-], starting with a letter or digit.
func ValidateID(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("container ID %q: must match %s: %w", id, idPattern, errdefs.ErrInvalidArgument)
	}
	return nil
}
