package runtime

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The holds of a container's image mounts are names the store takes (at
// most 128 characters of its alphabet, for the longest ID), never another
// container's, nor a container's root image hold, whatever dots the IDs
// hold.
func TestImageMountHolders(t *testing.T) {
	long := strings.Repeat("a", maxIDLength)
	require.NoError(t, ValidateID(long))
	h := imageMountHolder(long, MaxImageMounts-1)
	require.LessOrEqual(t, len(h), 128, h)
	require.Regexp(t, `^[a-zA-Z0-9_.-]+$`, h)

	seen := map[string]string{}
	for _, id := range []string{"a", "a.0", "a.1", "0.a", "image-mount.0.a", "container.a", "a.b.c"} {
		names := []string{rootfsHolder(id)}
		for i := range MaxImageMounts {
			names = append(names, imageMountHolder(id, i))
		}
		for i, n := range names {
			who := id + "#" + string(rune('0'+i))
			require.NotContains(t, seen, n, "%s and %s share a hold", seen[n], who)
			seen[n] = who
		}
	}
}
