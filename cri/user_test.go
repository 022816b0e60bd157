package cri

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/fixture"
)

// A tenant's image tree shapes /etc/passwd and /etc/group as it likes:
// links out of the tree resolve inside it, and anything but a regular
// file of a bounded size is refused, without blocking.
func TestUserDatabaseOfAHostileImage(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(outside, []byte("host:x:4242:4242::/host:/bin/sh\n"), 0o644))
	tree := func(t *testing.T) string {
		root := t.TempDir()
		require.NoError(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
		return root
	}

	for name, target := range map[string]string{"absolute": outside, "relative": "../../../../../../.." + outside} {
		t.Run("link "+name, func(t *testing.T) {
			root := tree(t)
			require.NoError(t, os.Symlink(target, filepath.Join(root, "etc/passwd")))
			data, err := readInRoot(root, "/etc/passwd")
			require.NoError(t, err) // the link leads nowhere inside the tree
			require.Empty(t, data)
			_, err = execUser(root, "host")
			require.True(t, errdefs.IsInvalidArgument(err), "%v", err)
		})
	}
	t.Run("FIFO", func(t *testing.T) {
		root := tree(t)
		require.NoError(t, unix.Mkfifo(filepath.Join(root, "etc/group"), 0o644))
		_, err := readInRoot(root, "/etc/group") // must not block
		require.True(t, errdefs.IsInvalidArgument(err), "%v", err)
	})
	t.Run("device node", func(t *testing.T) {
		fixture.RequireRoot(t)
		root := tree(t)
		require.NoError(t, unix.Mknod(filepath.Join(root, "etc/passwd"), unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3))))
		_, err := readInRoot(root, "/etc/passwd")
		require.True(t, errdefs.IsInvalidArgument(err), "%v", err)
	})
	t.Run("too large", func(t *testing.T) {
		root := tree(t)
		require.NoError(t, os.WriteFile(filepath.Join(root, "etc/passwd"), []byte(strings.Repeat("x", maxUserDB+1)), 0o644))
		_, err := readInRoot(root, "/etc/passwd")
		require.True(t, errdefs.IsInvalidArgument(err), "%v", err)
	})
	t.Run("names resolve in the image", func(t *testing.T) {
		root := tree(t)
		require.NoError(t, os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("app:x:1000:1000::/home/app:/bin/sh\n"), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(root, "etc/group"), []byte("extra:x:2000:app\n"), 0o644))
		u, err := execUser(root, "app")
		require.NoError(t, err)
		require.Equal(t, 1000, u.Uid)
		require.Equal(t, "/home/app", u.Home)
		require.Contains(t, u.Sgids, 2000)
	})
}
