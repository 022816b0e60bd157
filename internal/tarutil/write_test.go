package tarutil

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The archive keeps files, links and hard links; sockets are skipped.
func TestWriteDir(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "etc"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "etc/motd"), []byte("hello\n"), 0o640))
	require.NoError(t, os.Link(filepath.Join(dir, "etc/motd"), filepath.Join(dir, "etc/motd.2")))
	require.NoError(t, os.Symlink("/etc/shadow", filepath.Join(dir, "shadow")))
	require.NoError(t, unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600))
	stamp := time.Unix(1e9, 0)

	var buf bytes.Buffer
	require.NoError(t, WriteDir(&buf, dir, Options{ModTime: stamp}))
	got := map[string]*tar.Header{}
	body := map[string]string{}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		got[h.Name] = h
		b, _ := io.ReadAll(tr)
		body[h.Name] = string(b)
		require.True(t, h.ModTime.Equal(stamp), h.Name)
	}
	require.Equal(t, byte(tar.TypeDir), got["etc/"].Typeflag)
	require.Equal(t, "hello\n", body["etc/motd"])
	require.Equal(t, int64(0o640), got["etc/motd"].Mode&0o777)
	require.Equal(t, byte(tar.TypeLink), got["etc/motd.2"].Typeflag)
	require.Equal(t, "etc/motd", got["etc/motd.2"].Linkname)
	require.Equal(t, byte(tar.TypeSymlink), got["shadow"].Typeflag)
	require.Equal(t, "/etc/shadow", got["shadow"].Linkname, "a link is written as a link, never followed")
	require.Equal(t, byte(tar.TypeFifo), got["fifo"].Typeflag)
}

// What a tenant swaps in for a file between the walk and the open is
// refused: a link to a host file (not followed, even under the tree) and
// a FIFO (not waited on, which would wedge the archive).
func TestOpenBeneathRefusesSwaps(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(outside, []byte("host"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "file"), []byte("ok"), 0o600))
	require.NoError(t, os.Symlink(outside, filepath.Join(dir, "abs-link")))
	require.NoError(t, os.Symlink("file", filepath.Join(dir, "rel-link")))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
	require.NoError(t, os.Symlink(dir, filepath.Join(dir, "sub", "up")))
	require.NoError(t, unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600))
	root, err := os.Open(dir)
	require.NoError(t, err)
	defer root.Close()

	f, err := openBeneath(int(root.Fd()), "file")
	require.NoError(t, err)
	f.Close()
	for _, rel := range []string{"abs-link", "rel-link", "sub/up/file", "fifo", "../" + filepath.Base(dir) + "/file", "sub"} {
		done := make(chan error, 1)
		go func() {
			f, err := openBeneath(int(root.Fd()), rel)
			if err == nil {
				f.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			require.Errorf(t, err, "%s opened", rel)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the open blocked", rel)
		}
	}
}
