package runtime

import (
	"fmt"

	"github.com/containerd/errdefs"
)

// maxIDLength bounds container IDs: they become directory, cgroup and
// Docker names.
const maxIDLength = 64

// ValidateID reports whether id can name a container: 1 to 64 characters
// from [a-zA-Z0-9_.-], starting with a letter or digit. The same ID is a
// directory name, a cgroup name and a Docker name, so it must be safe in
// all of them.
func ValidateID(id string) error {
	if !validID(id) {
		return fmt.Errorf("container ID %q: must be 1 to %d characters of [a-zA-Z0-9_.-] starting with a letter or digit: %w", id, maxIDLength, errdefs.ErrInvalidArgument)
	}
	return nil
}

// validID is a hand-written ^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$: the engine's
// re-executed processes start faster without compiling a regexp at init.
func validID(id string) bool {
	if len(id) == 0 || len(id) > maxIDLength {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return false
		}
	}
	return true
}
