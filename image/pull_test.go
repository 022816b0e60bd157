package image_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/image"
	. "github.com/berthrun/berth/image/imagetest"
)

// mapRemote serves blobs from memory.
type mapRemote map[digest.Digest][]byte

func (m mapRemote) Fetch(_ context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	b, ok := m[d.Digest]
	if !ok {
		return nil, errdefs.ErrNotFound
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (m mapRemote) Origin() string { return "memory" }

// A store whose copy of a blob is not a file (a FIFO, a symlink) fails
// the pull that would adopt it, at once: it neither blocks on the FIFO
// nor reads where the symlink points.
func TestPullAdoptsOnlyFiles(t *testing.T) {
	for _, kind := range []string{"fifo", "symlink"} {
		t.Run(kind, func(t *testing.T) {
			s := openStore(t)
			l := Gzip(Tar(File("etc/a", "a\n")))
			im := NewImage([][]byte{l}, "/bin/sh")
			man := im.Manifest()
			r := mapRemote{digest.FromBytes(l): l, im.ConfigDigest(): im.Config, digest.FromBytes(man): man}
			p := filepath.Join(s.Dir(), "blobs", "sha256", digest.FromBytes(l).Encoded())
			require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o700))
			if kind == "fifo" {
				require.NoError(t, unix.Mkfifo(p, 0o600))
			} else {
				require.NoError(t, os.Symlink("/dev/zero", p))
			}
			done := make(chan error, 1)
			go func() {
				_, err := s.Pull(context.Background(), r, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(man), Size: int64(len(man))}, image.ImportOptions{})
				done <- err
			}()
			select {
			case err := <-done:
				require.Truef(t, errdefs.IsDataLoss(err), "%v", err)
			case <-time.After(10 * time.Second):
				if kind == "fifo" {
					// Let the open return.
					f, _ := os.OpenFile(p, os.O_WRONLY, 0)
					f.Close()
				}
				t.Fatal("the pull is stuck on the store's copy")
			}
		})
	}
}
